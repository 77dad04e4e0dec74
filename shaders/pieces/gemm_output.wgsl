// The strided GEMM's output, without a low-rank term (pieces/strided_gemm.wgsl): the
// includer is composed again with pieces/gemm_output_low_rank.wgsl in this file's place.

@group(0) @binding(2) var<storage, read_write> c: array<f32>;

// #include "low_rank_none.wgsl"
