// RMSNorm in HF's form: out = weight ⊙ x·r, r = 1/sqrt(mean(x²) + eps), over rows of C.
// One workgroup of 64 per row, rows spread over (x, y) workgroups.
//   rmsnorm_forward:          out, rstd (N)  ←  inp (N, C), weight (C)
//   rmsnorm_backward:         dinp = r·w⊙g − x·r³/C·Σ(w⊙g⊙x)
//   rmsnorm_backward_weight:  dweight[c] = Σ_rows g·x·r   (one invocation per column)

struct Params {
    N: u32,
    C: u32,
    eps: f32,
}

@group(0) @binding(0) var<storage, read> inp: array<f32>;
@group(0) @binding(1) var<storage, read> weight: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> rstd: array<f32>;

@group(0) @binding(4) var<storage, read> b_dout: array<f32>;
@group(0) @binding(5) var<storage, read> b_inp: array<f32>;
@group(0) @binding(6) var<storage, read> b_weight: array<f32>;
@group(0) @binding(7) var<storage, read> b_rstd: array<f32>;
@group(0) @binding(8) var<storage, read_write> dinp: array<f32>;

@group(0) @binding(9) var<storage, read> w_dout: array<f32>;
@group(0) @binding(10) var<storage, read> w_inp: array<f32>;
@group(0) @binding(11) var<storage, read> w_rstd: array<f32>;
@group(0) @binding(12) var<storage, read_write> dweight: array<f32>;
@group(1) @binding(0) var<uniform> p: Params;

const WG: u32 = 64u;
// #include "pieces/reduce.wgsl"

@compute @workgroup_size(64)
fn rmsnorm_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   lane: Lane) {
    let lid = lane.index;
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.N) { return; } // uniform per workgroup: barriers stay uniform
    let base = row * p.C;
    var ss = 0.0;
    for (var c = lid; c < p.C; c += WG) { ss += inp[base + c] * inp[base + c]; }
    let r = inverseSqrt(workgroup_sum(lane, ss) / f32(p.C) + p.eps);
    for (var c = lid; c < p.C; c += WG) { out[base + c] = weight[c] * (inp[base + c] * r); }
    if (lid == 0u) { rstd[row] = r; }
}

@compute @workgroup_size(64)
fn rmsnorm_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    lane: Lane) {
    let lid = lane.index;
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.N) { return; }
    let base = row * p.C;
    let r = b_rstd[row];
    var dot = 0.0;
    for (var c = lid; c < p.C; c += WG) { dot += b_weight[c] * b_dout[base + c] * b_inp[base + c]; }
    let k = workgroup_sum(lane, dot) * r * r * r / f32(p.C);
    for (var c = lid; c < p.C; c += WG) {
        dinp[base + c] = r * b_weight[c] * b_dout[base + c] - b_inp[base + c] * k;
    }
}

@compute @workgroup_size(64)
fn rmsnorm_backward_weight(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if (c >= p.C) { return; }
    var acc = 0.0;
    for (var n = 0u; n < p.N; n++) { acc += w_dout[n * p.C + c] * w_inp[n * p.C + c] * w_rstd[n]; }
    dweight[c] = acc;
}
