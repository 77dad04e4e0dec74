// The declarations every quantized matmul shares. core/build/ composes matmul_<format>.wgsl
// from this file, the format's file beside it (its bindings and block decoding: `dequant8`,
// `Chunk`, `load_chunk`, `decode8`, `dot32`), the unrolled entry points it generates and
// gather.wgsl (token embeddings from a tied lm_head's rows).
//
// Fused dequantization: the dense weight is never built. The forwards read a chunk of a W row
// once and decode it 8 weights at a time in registers; the input gradient decodes 8
// consecutive weights of a row per step. W is (N, K) in the nn.Linear layout, blocks along K.
//   matmul_<format>_forward_RxC:        out(M,N) = alpha · inp(M,K) · Wᵀ
//   matmul_<format>_backward_input_RxC: out(M,K) = alpha · inp(M,N) · W     (dx = dy·W)
// RxC is the block of outputs per invocation: large ones for software adapters, where loads
// are dear, 4x4 for GPUs, 1x4 for a single row. Block layout: shaders/README.md and
// core/src/quant/. The backward reads inp as vec4, so N must be a multiple of 4.

struct Params {
    M: u32,
    N: u32,
    K: u32,
    alpha: f32,
    aux: f32,                          // NF4: the absmax offset
    beta: f32,                         // quant_tiled.wgsl only: out = beta·out + alpha·product
    splits: u32,                       // quant_tiled.wgsl only: the split reduction
    r_split: u32,                      //   (matmul_tiled.wgsl explains it)
    term_r: u32,                       // quant_tiled.wgsl's low-rank term, as matmul_tiled.wgsl's
    term_scale: f32,                   //   (pieces/strided_gemm.wgsl), in the _low_rank
    term_v_sj: u32,                    //   composition; the dropout mask (p > 0) applies
    term_v_sr: u32,                    //   to the term alone (LoRA's part of dx)
    drop_seed: u32,
    drop_p: f32,
    norm_eps: f32,                     // quant_tiled.wgsl's input norm (_normed composition)
    term_h_row: u32,                   // the matrix-vector kernels' term over stacked weights
    term_h_part: u32,                  //   (pieces/low_rank_term.wgsl's term_h_of)
    term_start1: u32,
    term_start2: u32,
    a_block2: u32,                     // quant_tiled.wgsl's operands in column blocks
    a_block3: u32,                     //   (pieces/column_blocks.wgsl; 0: one matrix): the
    a_block2_at: u32,                  //   input gradient's inp and the term's H
    a_block3_at: u32,
    h_block2: u32,
    h_block3: u32,
    h_block2_at: u32,
    h_block3_at: u32,
    c_block2: u32,                     // the tiled forward's out in blocks
    c_block3: u32,
    c_block2_at: u32,
    c_block3_at: u32,
    first_row: u32,                    // gather.wgsl: the table's row that W's row 0 is
    term_skip_at: u32,                 // the matrix-vector kernels' term: output rows of a
    term_skip: u32,                    //   stacked part without one (gemv_term)
    scale_rows: u32,                   // quant_tiled.wgsl's f16 tiles: inp's and H's rows
                                       //   scaled (pieces/row_scales.wgsl; input gradients)
}

@group(1) @binding(0) var<uniform> p: Params;

// out[idx] = alpha·v. Accumulating into out (beta ≠ 0) is a separate pass, as in matmul.wgsl.
fn st1(idx: u32, v: f32) {
    out[idx] = p.alpha * v;
}

// out[idx + e] = alpha·v[e] for the e < 4 with col0 + e < ncols.
// No loop over e: dynamic indexing of a vector and branches slow llvmpipe's compile.
fn st4(idx: u32, col0: u32, ncols: u32, v: vec4<f32>) {
    if (col0 + 3u < ncols) {
        st1(idx, v.x); st1(idx + 1u, v.y); st1(idx + 2u, v.z); st1(idx + 3u, v.w);
        return;
    }
    if (col0 < ncols) { st1(idx, v.x); }
    if (col0 + 1u < ncols) { st1(idx + 1u, v.y); }
    if (col0 + 2u < ncols) { st1(idx + 2u, v.z); }
}
