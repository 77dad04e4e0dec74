// No low-rank term: what the kernels that can add one (matmul_tiled.wgsl,
// matmul/quant_tiled.wgsl) read when composed without it. core/build/ composes them again
// with pieces/low_rank_term.wgsl in this file's place.

const LOW_RANK: bool = false;

fn term_h_at(idx: u32) -> f32 {
    return 0.0;
}

fn term_v_at(idx: u32) -> f32 {
    return 0.0;
}

fn term_h_of(j: u32, i: u32, q: u32) -> f32 {
    return 0.0;
}

fn gemv_term(j: u32, i: u32) -> f32 {
    return 0.0;
}
