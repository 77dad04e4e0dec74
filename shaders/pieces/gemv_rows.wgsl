// The matrix-vector kernels' rows and partial sums (matmul_tiled.wgsl's and
// matmul/quant_tiled.wgsl's gemv kernels include this file, then pieces/gemv_sum.wgsl). A
// launch takes up to 4·GEMV_QUADS rows (the launcher sets GEMV_QUADS, 1 to GEMV_MAX_QUADS,
// so that loops over the quads have constant bounds and their sums stay in registers), and
// each invocation keeps its partial sums in a GemvSums: `sets` sets (the rows' products;
// up's where gated; the rows' sums of squares where normed) of GEMV_QUADS vec4s, set s's quad
// q (rows 4q .. 4q + 3) at s·GEMV_QUADS + q. The includer says what one step of the
// reduction reads: `GemvWeights` (that step's weights of the first set and of the second) and
// `gemv_products(i, at, w)` (row i's products with them at step `at`, and its squares).

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

// Adds row i's products at step `at` with w's first weights to set 0 of `sums` and with its
// second to set 1 where sets is 2, for each row i, and its squares to set `sets` (read where
// NORMED); nothing where the step is not `live` (past the reduction: its products come from
// a step inside it, and are dropped).
// Every row of each quad is computed, a row past M from row M − 1 (its sums are never
// written): loops of constant bounds, which a compiler unrolls, so that a batch of steps
// issues all its loads (the weights', the rows') before it waits on any. A loop to M put
// each step's loads behind the last step's wait, one round trip to memory a step
// (bench/amd_isa.sh, ACO).
fn gemv_add(sums: ptr<function, GemvSums>, at: u32, w: GemvWeights, sets: u32, live: bool) {
    for (var q = 0u; q < GEMV_QUADS; q++) {
        // the quad's rows in vec4s of their own: the sums indexed only by the quad, whose
        // loop has constant bounds, stay in registers
        var first = vec4<f32>();
        var second = vec4<f32>();
        var squares = vec4<f32>();
        for (var t = 0u; t < 4u; t++) {
            let v = select(vec3<f32>(), gemv_products(min(4u * q + t, p.M - 1u), at, w), live);
            first[t] = v.x;
            second[t] = v.y;
            squares[t] = v.z;
        }
        (*sums)[q] += first;
        if (sets == 2u) { (*sums)[GEMV_QUADS + q] += second; }
        (*sums)[sets * GEMV_QUADS + q] += squares;
    }
}

// 1/rms of an input row from its summed squares over `len` values; 1 without an input norm.
fn gemv_input_scale(ss: f32, len: u32) -> f32 {
    if (!NORMED) {
        return 1.0;
    }
    return inverseSqrt(ss / f32(len) + p.norm_eps);
}
