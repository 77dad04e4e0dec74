// The matrix-vector kernels' rows and partial sums (matmul_tiled.wgsl's and
// matmul/quant_tiled.wgsl's gemv kernels include this file, then pieces/gemv_sum.wgsl). A
// launch takes up to 4·GEMV_QUADS rows (the launcher sets GEMV_QUADS, 1 to GEMV_MAX_QUADS,
// so that loops over the quads have constant bounds and their sums stay in registers), and
// each invocation keeps its partial sums in a GemvSums: `sets` sets (the rows' products;
// up's where gated; the rows' sums of squares where normed) of GEMV_QUADS vec4s, set s's quad
// q (rows 4q .. 4q + 3) at s·GEMV_QUADS + q.

const GEMV_WG: u32 = 64u;
const GEMV_MAX_QUADS: u32 = 4u;
// (the includer's last override: naga 30 panics setting one declared after an override that
// sizes workgroup memory, as this one does in pieces/gemv_sum.wgsl)
override GEMV_QUADS: u32 = 1u;

alias GemvSums = array<vec4<f32>, 3u * GEMV_MAX_QUADS>;

// Row i's sum in set s. (The quads by a loop of constant bounds, so that no index into the
// sums varies by invocation: an array indexed so would leave registers for memory.)
fn gemv_row_sum(v: ptr<function, GemvSums>, s: u32, i: u32) -> f32 {
    var sum = 0.0;
    for (var q = 0u; q < GEMV_QUADS; q++) {
        if (q == i / 4u) { sum = (*v)[s * GEMV_QUADS + q][i % 4u]; }
    }
    return sum;
}
