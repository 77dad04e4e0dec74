// The global gradient norm for clipping, without a host round trip:
//   grad_norm_partial: sums[PARTS·slot + w] = Σ grad² over workgroup w's share of the
//                      tensor (PARTS workgroups per tensor: one alone read SmolLM2's
//                      adapter's 4.9M gradients in 2 ms on an H200)
//   grad_norm_finish:  out = (‖g‖, clip factor) with ‖g‖ = sqrt(Σ sums) and
//                      clip = min(1, max_norm / (‖g‖ + 1e-6)), or 1 when max_norm is 0.
// AdamW reads the clip factor straight from `out`.

struct Params {
    N: u32,
    slot: u32,
    max_norm: f32,
}

const WG: u32 = 256u;
// Workgroups per tensor (grad_norm.rs's PARTS).
const PARTS: u32 = 64u;

@group(0) @binding(0) var<storage, read> grad: array<f32>;
@group(0) @binding(1) var<storage, read_write> sums: array<f32>;

@group(0) @binding(2) var<storage, read> f_sums: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(1) @binding(0) var<uniform> p: Params;

// #include "pieces/reduce.wgsl"

@compute @workgroup_size(256)
fn grad_norm_partial(lane: Lane, @builtin(workgroup_id) wid: vec3<u32>) {
    let lid = lane.index;
    var acc = 0.0;
    for (var i = wid.x * WG + lid; i < p.N; i += PARTS * WG) { acc += grad[i] * grad[i]; }
    let total = workgroup_sum(lane, acc);
    if (lid == 0u) { sums[p.slot * PARTS + wid.x] = total; }
}

@compute @workgroup_size(256)
fn grad_norm_finish(lane: Lane) {
    let lid = lane.index;
    var acc = 0.0;
    for (var i = lid; i < p.N; i += WG) { acc += f_sums[i]; }
    let norm = sqrt(workgroup_sum(lane, acc));
    if (lid == 0u) {
        out[0] = norm;
        out[1] = select(1.0, min(1.0, p.max_norm / (norm + 1e-6)), p.max_norm > 0.0);
    }
}
