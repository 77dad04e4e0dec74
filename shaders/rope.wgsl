// Rotary position embedding in HF's rotate_half convention, over (N tokens, H heads, HS):
// for i < HS/2, θ = pos[n]·theta^(−2i/HS):
//   out[i]        = x[i]·cos θ − x[i + HS/2]·sin θ
//   out[i + HS/2] = x[i + HS/2]·cos θ + x[i]·sin θ
// rope_backward applies the transposed rotation (θ → −θ) to the gradient.
// Positions come from a buffer so that packed sequences can restart at 0.

struct Params {
    N: u32,
    H: u32,
    HS: u32,
    theta: f32,
}

@group(0) @binding(0) var<storage, read> inp: array<f32>;
@group(0) @binding(1) var<storage, read> pos: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(1) @binding(0) var<uniform> p: Params;

fn rotate(i: u32, sign: f32) {
    let half = p.HS / 2u;
    if (i >= p.N * p.H * half) { return; }
    let j = i % half;
    let head = i / half;          // n·H + h
    let n = head / p.H;
    // HF: inv_freq = 1 / theta^(2j/HS) in f32, then angle = pos · inv_freq.
    let inv_freq = 1.0 / pow(p.theta, f32(2u * j) / f32(p.HS));
    let angle = f32(pos[n]) * inv_freq;
    let c = cos(angle);
    let s = sign * sin(angle);
    let base = head * p.HS;
    let x1 = inp[base + j];
    let x2 = inp[base + j + half];
    out[base + j] = x1 * c - x2 * s;
    out[base + j + half] = x2 * c + x1 * s;
}

@compute @workgroup_size(256)
fn rope_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    rotate(gid.x + gid.y * nwg.x * 256u, 1.0);
}

@compute @workgroup_size(256)
fn rope_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    rotate(gid.x + gid.y * nwg.x * 256u, -1.0);
}
