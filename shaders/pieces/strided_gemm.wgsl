// The strided GEMM's parameters and inputs, shared by matmul_tiled.wgsl and
// matmul_coop.wgsl (their Rust twin: StridedParams in core/src/ops/matmul.rs):
//   c[z](M,N) = beta·c[z] + alpha · (Σ_r A(i,r)·B(j,r) + term_scale · Σ_q H(i,q)·V(j,q))
//   A(i,r) = a[z·a_batch + i·a_si + r·a_sr],  B(j,r) = b[z·b_batch + j·b_sj + r·b_sr]
// (z the batch item; c[z] at z·c_batch)
// The second sum, a low-rank term, only where the includer is composed with
// pieces/gemm_output_low_rank.wgsl (which declares H, V and c) instead of
// pieces/gemm_output.wgsl (c alone): LoRA's h·Bᵀ added in the base matmul's epilogue.
//   H(i,q) = term_h[i·term_r + q] (q < term_r),  V(j,q) = term_v[j·term_v_sj + q·term_v_sr]
// (A and H in blocks along the reduction, and c along its columns, where a_block2, h_block2
// and c_block2 say so: pieces/column_blocks.wgsl; a weight gradient's A along its rows.)

struct Params {
    M: u32,
    N: u32,
    R: u32,
    alpha: f32,
    beta: f32,
    a_si: u32,
    a_sr: u32,
    b_sj: u32,
    b_sr: u32,
    a_batch: u32,
    b_batch: u32,
    c_batch: u32,
    splits: u32,
    r_split: u32,
    // LoRA dropout fused into the product (matmul_tiled.wgsl only; the launcher applies it
    // around the cooperative-matrix kernel): the mask (pieces/dropout_mask.wgsl) applied to
    // A's values as they are staged (DROP_A), B's (DROP_B), or the product before beta·c is
    // added (DROP_OUT), or the low-rank term's product alone (DROP_TERM), each at its flat
    // index in its buffer; 0: none.
    drop_on: u32,
    drop_seed: u32,
    drop_p: f32,
    term_r: u32,
    term_scale: f32,
    term_v_sj: u32,
    term_v_sr: u32,
    // The input norm's eps (matrix-vector kernels composed with pieces/input_norm.wgsl).
    norm_eps: f32,
    // The matrix-vector kernels' term over stacked weights (pieces/low_rank_term.wgsl's
    // term_h_of): H's row stride, its parts' distance, the output rows where parts 2 and 3 start.
    term_h_row: u32,
    term_h_part: u32,
    term_start1: u32,
    term_start2: u32,
    // The tiled kernels' operands in column blocks (pieces/column_blocks.wgsl): A's (an input
    // gradient's, with a_sr 1 and the first block's rows a_block2 long) and a low-rank term's
    // H, along the reduction; 0 where one is a single matrix.
    a_block2: u32,
    a_block3: u32,
    a_block2_at: u32,
    a_block3_at: u32,
    h_block2: u32,
    h_block3: u32,
    h_block2_at: u32,
    h_block3_at: u32,
    // ... and the output's (a forward's, unbatched and unsplit)
    c_block2: u32,
    c_block3: u32,
    c_block2_at: u32,
    c_block3_at: u32,
    // 1: A's blocks lie along its rows i instead (a weight gradient's a, dy read transposed:
    // the output's rows in blocks)
    a_blocks_on_rows: u32,
    // A split reduction's parts: floats between one part of c and the next (matmul_tiled.wgsl;
    // matmul_coop.wgsl, which splits unbatched products only, reads c_batch)
    c_split: u32,
    // The matrix-vector kernels' term over stacked weights: the output rows of a part without
    // one (pieces/low_rank_term.wgsl's gemv_term); 0 rows: none.
    term_skip_at: u32,
    term_skip: u32,
    // 1: the tiled kernels' f16 tiles scale each row of A and H (pieces/row_scales.wgsl; input
    // gradients)
    scale_rows: u32,
}

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(1) @binding(0) var<uniform> p: Params;
