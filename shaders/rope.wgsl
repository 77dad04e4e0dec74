// Rotary position embedding in HF's rotate_half convention, over (N tokens, H heads, HS), on
// the first R = `rot` dims of each head (partial rotary, Phi); the other HS − R pass through.
// For i < R/2, θ = pos[n]·inv_freq(i), inv_freq(i) = theta^(−2i/R):
//   out[i]       = m·(x[i]·cos θ − x[i + R/2]·sin θ)
//   out[i + R/2] = m·(x[i + R/2]·cos θ + x[i]·sin θ)
// with m = `mscale` (LongRoPE's attention factor; 1 otherwise). rope_backward applies the
// transposed map (θ → −θ, the same m) to the gradient. Positions come from a buffer so that
// packed sequences can restart at 0.
// Frequencies: Llama 3's rope scaling (factor > 0) divides the low frequencies by `factor` and
// blends the middle band, as HF's _compute_llama3_parameters does; LongRoPE (`divided` 1)
// divides frequency i by divisors[i] (its short factors), as _compute_longrope_parameters.

struct Params {
    N: u32,
    H: u32,
    HS: u32,
    theta: f32,
    factor: f32,
    low_freq_factor: f32,
    high_freq_factor: f32,
    original_ctx: f32,
    rot: u32,
    mscale: f32,
    divided: u32,
    _pad: u32,
    divisors: array<vec4<f32>, 12>, // up to 48 frequencies (core/src/ops/rope.rs: MAX_FREQS)
}

@group(0) @binding(0) var<storage, read> inp: array<f32>;
@group(0) @binding(1) var<storage, read> pos: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(1) @binding(0) var<uniform> p: Params;

// HF: inv_freq = 1 / theta^(2j/R) in f32, then the scaling.
fn inv_freq(j: u32) -> f32 {
    let f = 1.0 / pow(p.theta, f32(2u * j) / f32(p.rot));
    if (p.divided != 0u) { return f / p.divisors[j / 4u][j % 4u]; }
    if (p.factor == 0.0) { return f; }
    let wavelen = 6.283185307179586 / f;
    if (wavelen < p.original_ctx / p.high_freq_factor) { return f; }
    if (wavelen > p.original_ctx / p.low_freq_factor) { return f / p.factor; }
    let blend = (p.original_ctx / wavelen - p.low_freq_factor) / (p.high_freq_factor - p.low_freq_factor);
    return (1.0 - blend) * f / p.factor + blend * f;
}

// Invocation i handles pair j = i mod HS/2 of head i / (HS/2): a rotated pair (j, j + R/2)
// when j < R/2, else two passed-through dims.
fn rotate(i: u32, sign: f32) {
    let half = p.HS / 2u;
    if (i >= p.N * p.H * half) { return; }
    let j = i % half;
    let head = i / half;          // n·H + h
    let n = head / p.H;
    let base = head * p.HS;
    let rh = p.rot / 2u;
    if (j >= rh) {
        let e = base + p.rot + 2u * (j - rh);
        out[e] = inp[e];
        out[e + 1u] = inp[e + 1u];
        return;
    }
    let angle = f32(pos[n]) * inv_freq(j);
    let c = p.mscale * cos(angle);
    let s = p.mscale * sign * sin(angle);
    let x1 = inp[base + j];
    let x2 = inp[base + j + rh];
    out[base + j] = x1 * c - x2 * s;
    out[base + j + rh] = x2 * c + x1 * s;
}

@compute @workgroup_size(256)
fn rope_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    rotate(gid.x + gid.y * nwg.x * 256u, 1.0);
}

@compute @workgroup_size(256)
fn rope_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    rotate(gid.x + gid.y * nwg.x * 256u, -1.0);
}
