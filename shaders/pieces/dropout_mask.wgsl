// LoRA dropout's mask: keep is 0 with probability p, from a counter-based hash of
// (seed, index) (Chris Wellons' lowbias32), so that the forward, the backward and the CPU
// reference (ops::cpu::dropout_keep) draw the same mask without storing it. dropout.wgsl
// applies it four at a time; the tiled matmul (matmul_tiled.wgsl) to the values it stages.
// The includer's Params hold the seed already hashed on the host (lowbias32(seed)).

fn lowbias32(v: vec4<u32>) -> vec4<u32> {
    var x = v;
    x = x ^ (x >> vec4<u32>(16u));
    x = x * 0x7feb352du;
    x = x ^ (x >> vec4<u32>(15u));
    x = x * 0x846ca68bu;
    x = x ^ (x >> vec4<u32>(16u));
    return x;
}

// Whether the values at `idx` are kept, for a seed hashed on the host and probability `prob`.
fn dropout_keep(idx: vec4<u32>, seed_hash: u32, prob: f32) -> vec4<bool> {
    // 24 random bits as a uniform in [0, 1)
    let u = vec4<f32>(lowbias32(idx ^ vec4<u32>(seed_hash)) >> vec4<u32>(8u)) * (1.0 / 16777216.0);
    return u >= vec4<f32>(prob);
}
