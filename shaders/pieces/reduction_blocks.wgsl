// An operand whose reduction columns lie in up to three blocks, each a row-major matrix of
// its own width stored apart (ops::matmul::ReductionBlocks): a stacked weight's input
// gradient reads the gradients of its parts (q's, k's and v's outputs; LoRA's dh of each)
// where they lie, as one reduction, without gathering them into one matrix first.
// `starts`: the columns where the second and third blocks start (0: no such block; the
// first starts at 0, its rows `starts.x` long); `offsets`: where they lie, in floats from the
// first; `end`: the reduction's length. The includer's Params (pieces/strided_gemm.wgsl's,
// matmul/quant.wgsl's) give the blocks of A (a_block*) and of a low-rank term's H (h_block*).

// The flat index of element (i, r).
fn block_index(i: u32, r: u32, starts: vec2<u32>, offsets: vec2<u32>, end: u32) -> u32 {
    if (starts.y != 0u && r >= starts.y) {
        return offsets.y + i * (end - starts.y) + r - starts.y;
    }
    if (r >= starts.x) {
        return offsets.x + i * (select(end, starts.y, starts.y != 0u) - starts.x) + r - starts.x;
    }
    return i * starts.x + r;
}

// H(i, q) of a low-rank term: blocked where h_block2 is set (the dh of each of a stacked
// weight's parts against their A's back to back), else H (M × term_r) row-major.
fn term_h_index(i: u32, q: u32) -> u32 {
    if (p.h_block2 == 0u) {
        return i * p.term_r + q;
    }
    return block_index(i, q, vec2<u32>(p.h_block2, p.h_block3), vec2<u32>(p.h_block2_at, p.h_block3_at), p.term_r);
}
