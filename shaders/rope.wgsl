// Rotary position embedding in HF's rotate_half convention, over one layer's queries (N
// tokens, H heads, HS) and keys (N, HK, HS) in one launch, on the first R = `rot` dims of
// each head (partial rotary, Phi); the other HS − R pass through. For i < R/2,
// θ = pos[n]·freqs[i]:
//   out[i]       = m·(x[i]·cos θ − x[i + R/2]·sin θ)
//   out[i + R/2] = m·(x[i + R/2]·cos θ + x[i]·sin θ)
// with m = `mscale` (LongRoPE's attention factor; 1 otherwise). rope_backward_in_place
// (rope_in_place.wgsl) applies the transposed map (θ → −θ, the same m) to the gradients, as
// attention's backward kernels do where they can (attention.wgsl). Positions come from a
// buffer so that packed sequences can restart at 0.
// The frequencies come from the host (core/src/ops/rope.rs: `frequencies`), in f32 as HF
// computes them, so that θ is the same f32 product as PyTorch's; cos θ and sin θ are
// evaluated here to f32 precision at any position (`sincos`), since an adapter's own cos and
// sin may be far coarser away from 0 (WGSL bounds their error only on [−π, π], to 2⁻¹¹;
// SwiftShader's were off by 2e-4 at 30 radians).

// #include "pieces/rope_rotate.wgsl"

@group(0) @binding(2) var<storage, read> q: array<f32>;
@group(0) @binding(3) var<storage, read> k: array<f32>;
@group(0) @binding(4) var<storage, read_write> q_out: array<f32>;
@group(0) @binding(5) var<storage, read_write> k_out: array<f32>;

fn load(on_k: bool, e: u32) -> f32 {
    if (on_k) { return k[e]; }
    return q[e];
}

fn store(on_k: bool, e: u32, v: f32) {
    if (on_k) { k_out[e] = v; } else { q_out[e] = v; }
}

@compute @workgroup_size(256)
fn rope_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    rotate(gid.x + gid.y * nwg.x * 256u, 1.0);
}
