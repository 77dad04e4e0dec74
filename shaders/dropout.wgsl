// Dropout as LoRA applies it to a layer's input: out = beta·out + inp·keep/(1 − p), where
// keep is 0 with probability p. The mask comes from a counter-based hash of (seed, index),
// so the backward pass (the same op on the upstream gradient, same seed) and the CPU
// reference (ops::cpu::dropout_keep) see exactly the same mask without storing it.

struct Params {
    N: u32,
    seed: u32,
    p: f32,
    beta: f32,
}

@group(0) @binding(0) var<storage, read> inp: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(1) @binding(0) var<uniform> p: Params;

// Chris Wellons' lowbias32 integer hash.
fn lowbias32(v: u32) -> u32 {
    var x = v;
    x = x ^ (x >> 16u);
    x = x * 0x7feb352du;
    x = x ^ (x >> 15u);
    x = x * 0x846ca68bu;
    x = x ^ (x >> 16u);
    return x;
}

@compute @workgroup_size(256)
fn dropout_forward(@builtin(global_invocation_id) gid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= p.N) { return; }
    // 24 random bits as a uniform in [0, 1)
    let u = f32(lowbias32(i ^ lowbias32(p.seed)) >> 8u) * (1.0 / 16777216.0);
    var v = 0.0;
    if (u >= p.p) { v = inp[i] / (1.0 - p.p); }
    if (p.beta != 0.0) { v = v + p.beta * out[i]; }
    out[i] = v;
}
