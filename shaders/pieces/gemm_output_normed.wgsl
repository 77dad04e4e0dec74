// The strided GEMM's output with an input norm's weight before it (by the binding
// convention): matmul_tiled.wgsl's matrix-vector kernels composed with pieces/input_norm.wgsl,
// as matmul_tiled_normed.wgsl (decoding, where the norm before a projection has no launch
// of its own). No low-rank term.

@group(0) @binding(2) var<storage, read> norm_w: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

// #include "low_rank_none.wgsl"
