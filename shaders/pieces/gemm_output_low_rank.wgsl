// The strided GEMM's output with a low-rank term's operands before it (its inputs come first,
// by the binding convention): H (M × term_r, row-major) and V (pieces/strided_gemm.wgsl).

@group(0) @binding(2) var<storage, read> term_h: array<f32>;
@group(0) @binding(3) var<storage, read> term_v: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;

// #include "low_rank_term.wgsl"
