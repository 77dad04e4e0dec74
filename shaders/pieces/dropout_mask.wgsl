// LoRA dropout's mask: keep is 0 with probability p, from a counter-based hash of
// (seed, index) (pieces/lowbias32.wgsl), so that the forward, the backward and the CPU
// reference (ops::cpu::dropout_keep) draw the same mask without storing it. dropout.wgsl
// applies it four at a time; the tiled matmul (matmul_tiled.wgsl) to the values it stages.
// The includer's Params hold the seed already hashed on the host (lowbias32(seed)).

// #include "lowbias32.wgsl"

fn lowbias32x4(v: vec4<u32>) -> vec4<u32> {
    return vec4<u32>(lowbias32(v.x), lowbias32(v.y), lowbias32(v.z), lowbias32(v.w));
}

// Whether the values at `idx` are kept, for a seed hashed on the host and probability `prob`.
fn dropout_keep(idx: vec4<u32>, seed_hash: u32, prob: f32) -> vec4<bool> {
    // 24 random bits as a uniform in [0, 1)
    let u = vec4<f32>(lowbias32x4(idx ^ vec4<u32>(seed_hash)) >> vec4<u32>(8u)) * (1.0 / 16777216.0);
    return u >= vec4<f32>(prob);
}
