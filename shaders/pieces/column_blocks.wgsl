// An operand whose columns lie in two or three blocks, each a row-major matrix of its own
// width stored apart (ops::matmul::ColumnBlocks). Weights stacked by rows (q, k, v; gate, up)
// take one launch for all their parts: the input gradient reads the parts' output gradients
// (and LoRA's dh of each) where the backward wrote them, as one reduction; the forward writes
// each part's columns of the output where the block wants them.
// `starts`: the columns where the second and third blocks start (0: no such block; the first
// starts at 0, its rows `starts.x` long); `offsets`: where they lie, in floats from the first;
// `end`: the columns in all. The includer's Params (pieces/strided_gemm.wgsl's,
// matmul/quant.wgsl's) give the blocks of A (a_block*), of the output (c_block*) and of a
// low-rank term's H (h_block*).

// The block column r falls in (0, 1 or 2).
fn block_of(r: u32, starts: vec2<u32>) -> u32 {
    return select(0u, 1u, starts.x != 0u && r >= starts.x) + select(0u, 1u, starts.y != 0u && r >= starts.y);
}

// The flat index of element (i, r). (Selects, not branches: the tiled kernels load through
// it, and a load under a branch waits for the branch.)
fn block_index(i: u32, r: u32, starts: vec2<u32>, offsets: vec2<u32>, end: u32) -> u32 {
    let third = (starts.y != 0u) & (r >= starts.y);
    let second = !third & (r >= starts.x);
    // each block's first column, width and place
    let first = select(select(0u, starts.x, second), starts.y, third);
    let width = select(select(starts.x, select(end, starts.y, starts.y != 0u) - starts.x, second), end - starts.y, third);
    let at = select(select(0u, offsets.x, second), offsets.y, third);
    return at + i * width + r - first;
}

// H(i, q) of a low-rank term: blocked where h_block2 is set (the dh, or the x·Aᵀ, of each of
// a stacked weight's parts), else H (M × term_r) row-major.
fn term_h_index(i: u32, q: u32) -> u32 {
    if (p.h_block2 == 0u) {
        return i * p.term_r + q;
    }
    return block_index(i, q, vec2<u32>(p.h_block2, p.h_block3), vec2<u32>(p.h_block2_at, p.h_block3_at), p.term_r);
}

// The index of V(j, q) of a low-rank term, or -1 where it is 0: over an output in blocks (a
// stacked forward, each part with its own LoRA), V is block-diagonal: output block t takes H's
// block t against its B, the B's stacked by rows (j·term_v_sj + (q − H's block start)). A
// part the adapter leaves alone (k of PEFT's default q, v) has no term: H has no block for
// the last output block, or an empty second one (h_block2 == h_block3), and V no rows for it.
fn term_v_index(j: u32, q: u32) -> i32 {
    if (p.c_block2 == 0u) {
        return i32(j * p.term_v_sj + q * p.term_v_sr);
    }
    let h_starts = vec2<u32>(p.h_block2, p.h_block3);
    let t = block_of(q, h_starts);
    if (t != block_of(j, vec2<u32>(p.c_block2, p.c_block3))) {
        return -1;
    }
    let q0 = select(0u, select(h_starts.x, h_starts.y, t == 2u), t != 0u);
    let skipped = select(0u, p.c_block3 - p.c_block2, t == 2u && h_starts.x == h_starts.y);
    return i32((j - skipped) * p.term_v_sj + (q - q0) * p.term_v_sr);
}
