// The strided GEMM's output with an input norm's weight and a low-rank term's operands before
// it (by the binding convention): matmul_tiled.wgsl's matrix-vector kernels composed with
// pieces/input_norm.wgsl, as matmul_tiled_normed.wgsl (decoding, where the norm before a
// projection has no launch of its own), with LoRA's h·Bᵀ where the term's rank is not 0
// (else its bindings are any buffers, never read).

@group(0) @binding(2) var<storage, read> norm_w: array<f32>;
@group(0) @binding(3) var<storage, read> term_h: array<f32>;
@group(0) @binding(4) var<storage, read> term_v: array<f32>;
@group(0) @binding(5) var<storage, read_write> c: array<f32>;

// #include "low_rank_term.wgsl"
