// Dropout as LoRA applies it to a layer's input: out = beta·out + inp·keep/(1 − p), where
// keep is 0 with probability p. The mask comes from a counter-based hash of (seed, index),
// so the backward pass (the same op on the upstream gradient, same seed) and the CPU
// reference (ops::cpu::dropout_keep) see exactly the same mask without storing it.

// Each invocation takes a vec4; past N (a length not a multiple of 4) it leaves what is there.

struct Params {
    N: u32,
    seed_hash: u32, // lowbias32(seed), from the host
    p: f32,
    beta: f32,
}

@group(0) @binding(0) var<storage, read> inp: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> out: array<vec4<f32>>;
@group(1) @binding(0) var<uniform> p: Params;

// Chris Wellons' lowbias32 integer hash, four at a time.
fn lowbias32(v: vec4<u32>) -> vec4<u32> {
    var x = v;
    x = x ^ (x >> vec4<u32>(16u));
    x = x * 0x7feb352du;
    x = x ^ (x >> vec4<u32>(15u));
    x = x * 0x846ca68bu;
    x = x ^ (x >> vec4<u32>(16u));
    return x;
}

@compute @workgroup_size(256)
fn dropout_forward(@builtin(global_invocation_id) gid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (4u * i >= p.N) { return; }
    let idx = vec4<u32>(4u * i) + vec4<u32>(0u, 1u, 2u, 3u);
    // 24 random bits as a uniform in [0, 1)
    let u = vec4<f32>(lowbias32(idx ^ vec4<u32>(p.seed_hash)) >> vec4<u32>(8u)) * (1.0 / 16777216.0);
    var v = select(vec4<f32>(), inp[i] / (1.0 - p.p), u >= vec4<f32>(p.p));
    let past_end = idx >= vec4<u32>(p.N);
    if (p.beta != 0.0 || any(past_end)) {
        let old = out[i];
        v = select(v + p.beta * old, old, past_end);
    }
    out[i] = v;
}
