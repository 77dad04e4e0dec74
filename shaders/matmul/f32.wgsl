// f32 matmul in the nn.Linear layout, register-blocked for software adapters (lavapipe,
// SwiftShader): each invocation computes a block of outputs from vec4 loads, with no
// workgroup memory. On such adapters every buffer load costs a loop over the SIMD lanes, so the
// number of FMAs each loaded value feeds decides the speed (shared/TESTING.md, docs/PERF.md).
// core/build/ composes matmul.wgsl from this file and the unrolled entry points it generates.
//
//   matmul_forward:         c(M,N) = alpha · a(M,K) · b(N,K)ᵀ     (y = x·Wᵀ)
//   matmul_backward_input:  c(M,K) = alpha · a(M,N) · b(N,K)      (dx = dy·W)
//   matmul_backward_weight: c(N,K) = alpha · a(M,N)ᵀ · b(M,K)     (dW = dyᵀ·x)
//
// Requirements (checked by the launcher): the dimensions read as vec4 are multiples of 4:
// N and K for all three. Other sizes go to matmul_tiled.
// A batch index (workgroup z) offsets a and c by whole matrices, b only when b_batched is 1.
// Rows past the end are clamped on load and skipped on store.

struct Params {
    M: u32,
    N: u32,
    K: u32,
    alpha: f32,
    b_batched: u32,
}

@group(0) @binding(0) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> c: array<vec4<f32>>;
@group(1) @binding(0) var<uniform> p: Params;

// c[idx] = alpha·v. Accumulating into c (beta ≠ 0) is a separate pass (residual.wgsl's
// residual_accumulate): reading c in these unrolled stores made llvmpipe's compile 3× slower.
fn st(idx: u32, v: vec4<f32>) {
    c[idx] = p.alpha * v;
}
