// RMSNorm in HF's form: out = weight ⊙ x·r, r = 1/sqrt(mean(x²) + eps), over rows of C.
// One workgroup of 64 per row, rows spread over (x, y) workgroups.
//   rmsnorm_forward:          out, rstd (N)  ←  inp (N, C), weight (C)
//   rmsnorm_backward:         dinp = beta·dinp + r·w⊙g − x·r³/C·Σ(w⊙g⊙x)
//                             (beta 1: a residual stream's gradient takes the norm's part)
//   rmsnorm_backward_weight:  dweight[c] = Σ_rows g·x·r   (one invocation per column)
//   add_rmsnorm_forward:      sum = x + proj, then rmsnorm_forward of sum (a residual add
//                             and the next norm in one launch)
//   add_rmsnorm_forward_in_place: the same with x += proj in place

struct Params {
    N: u32,
    C: u32,
    eps: f32,
    beta: f32,
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
@group(0) @binding(13) var<storage, read> a_x: array<f32>;
@group(0) @binding(14) var<storage, read> a_proj: array<f32>;
@group(0) @binding(15) var<storage, read> a_weight: array<f32>;
@group(0) @binding(16) var<storage, read_write> a_sum: array<f32>;
@group(0) @binding(17) var<storage, read_write> a_out: array<f32>;
@group(0) @binding(18) var<storage, read_write> a_rstd: array<f32>;

@group(0) @binding(19) var<storage, read> i_proj: array<f32>;
@group(0) @binding(20) var<storage, read> i_weight: array<f32>;
@group(0) @binding(21) var<storage, read_write> i_x: array<f32>;
@group(0) @binding(22) var<storage, read_write> i_out: array<f32>;
@group(0) @binding(23) var<storage, read_write> i_rstd: array<f32>;
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
        var v = r * b_weight[c] * b_dout[base + c] - b_inp[base + c] * k;
        if (p.beta != 0.0) {
            v += p.beta * dinp[base + c];
        }
        dinp[base + c] = v;
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

@compute @workgroup_size(64)
fn add_rmsnorm_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       lane: Lane) {
    let lid = lane.index;
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.N) { return; }
    let base = row * p.C;
    var ss = 0.0;
    for (var c = lid; c < p.C; c += WG) {
        let v = a_x[base + c] + a_proj[base + c];
        a_sum[base + c] = v;
        ss += v * v;
    }
    let r = inverseSqrt(workgroup_sum(lane, ss) / f32(p.C) + p.eps);
    // each invocation reads back only what it wrote
    for (var c = lid; c < p.C; c += WG) { a_out[base + c] = a_weight[c] * (a_sum[base + c] * r); }
    if (lid == 0u) { a_rstd[row] = r; }
}

@compute @workgroup_size(64)
fn add_rmsnorm_forward_in_place(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                                lane: Lane) {
    let lid = lane.index;
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.N) { return; }
    let base = row * p.C;
    var ss = 0.0;
    for (var c = lid; c < p.C; c += WG) {
        let v = i_x[base + c] + i_proj[base + c];
        i_x[base + c] = v;
        ss += v * v;
    }
    let r = inverseSqrt(workgroup_sum(lane, ss) / f32(p.C) + p.eps);
    for (var c = lid; c < p.C; c += WG) { i_out[base + c] = i_weight[c] * (i_x[base + c] * r); }
    if (lid == 0u) { i_rstd[row] = r; }
}
