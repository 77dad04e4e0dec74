// Rotary position embedding in HF's rotate_half convention, over (N tokens, H heads, HS):
// for i < HS/2, θ = pos[n]·theta^(−2i/HS):
//   out[i]        = x[i]·cos θ − x[i + HS/2]·sin θ
//   out[i + HS/2] = x[i + HS/2]·cos θ + x[i]·sin θ
// rope_backward applies the transposed rotation (θ → −θ) to the gradient.
// Positions come from a buffer so that packed sequences can restart at 0.
// Llama 3's rope scaling (factor > 0) divides the low frequencies by `factor` and blends the
// middle band, as HF's _compute_llama3_parameters does; factor 0 leaves them as they are.

struct Params {
    N: u32,
    H: u32,
    HS: u32,
    theta: f32,
    factor: f32,
    low_freq_factor: f32,
    high_freq_factor: f32,
    original_ctx: f32,
}

@group(0) @binding(0) var<storage, read> inp: array<f32>;
@group(0) @binding(1) var<storage, read> pos: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(1) @binding(0) var<uniform> p: Params;

// HF: inv_freq = 1 / theta^(2j/HS) in f32, then Llama 3's scaling when it is on.
fn inv_freq(j: u32) -> f32 {
    let f = 1.0 / pow(p.theta, f32(2u * j) / f32(p.HS));
    if (p.factor == 0.0) { return f; }
    let wavelen = 6.283185307179586 / f;
    if (wavelen < p.original_ctx / p.high_freq_factor) { return f; }
    if (wavelen > p.original_ctx / p.low_freq_factor) { return f / p.factor; }
    let blend = (p.original_ctx / wavelen - p.low_freq_factor) / (p.high_freq_factor - p.low_freq_factor);
    return (1.0 - blend) * f / p.factor + blend * f;
}

fn rotate(i: u32, sign: f32) {
    let half = p.HS / 2u;
    if (i >= p.N * p.H * half) { return; }
    let j = i % half;
    let head = i / half;          // n·H + h
    let n = head / p.H;
    let angle = f32(pos[n]) * inv_freq(j);
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
