// inp(i, r) of the quantized tiled kernels (quant_tiled.wgsl, quant_coop.wgsl), for a
// row-major inp with `stride` columns, or in blocks along them (the input gradient of stacked
// weights: pieces/column_blocks.wgsl).
fn inp_at(i: u32, r: u32, stride: u32) -> f32 {
    return inp_word(inp_index(i, r, stride));
}

// Where inp(i, r) lies, in floats.
fn inp_index(i: u32, r: u32, stride: u32) -> u32 {
    if (p.a_block2 != 0u) {
        return block_index(i, r, vec2<u32>(p.a_block2, p.a_block3), vec2<u32>(p.a_block2_at, p.a_block3_at), stride);
    }
    return i * stride + r;
}

fn inp_word(idx: u32) -> f32 {
    return inp[idx / 4u][idx % 4u];
}
