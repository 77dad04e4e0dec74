// No row scales: what the kernels staging through f32 tiles (pieces/tile_f32.wgsl) call in
// pieces/row_scales.wgsl's place, which pieces/tile_f16.wgsl includes.

fn scale_rows(with_term: bool, a_off: u32, i0: u32, r_begin: u32, r_end: u32, flat: u32) {}

fn row_scaled(row: u32, v: f32) -> f32 {
    return v;
}

fn row_unscaled(row: u32, v: f32) -> f32 {
    return v;
}
