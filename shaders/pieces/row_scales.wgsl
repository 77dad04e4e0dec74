// Row scales for input gradients in f16 tiles (matmul_tiled.wgsl, matmul/quant_tiled.wgsl,
// matmul_coop.wgsl; the launcher sets the Params' scale_rows). A gradient's values are small
// (1e-6 and below is common) and f16's normal range ends at 6e-5: rounded as they are, they
// would lose their digits or vanish. So each row of the staged left operand (and of a
// low-rank term's H, which adds into the same rows) is multiplied by a power of two that
// brings its largest magnitude into [2^13, 2^14) before it is rounded, and the row's outputs by
// the inverse after the f32 sums: exact, since both are powers of two. A row's scale comes
// from the values this workgroup stages (its part of a split reduction), so no pass or
// launch of its own is needed, and anything a row holds stays 4× below f16's largest value.
//
// pieces/tile_f16.wgsl includes this file (and matmul_coop.wgsl, whose tiles are f16);
// pieces/tile_f32.wgsl includes row_scales_none.wgsl instead. The includer calls scale_rows
// before its reduction (in uniform control flow: it has barriers), then row_scaled(row, v) as
// it stages a value of A or H and row_unscaled(row, v) as it stores an output; and it defines
// what scale_rows reads: staged_rows() (its tile's rows), staged_invocations() (its
// workgroup's), staged_along_r(term) (whether consecutive invocations stage along r) and
// staged_value(term, a_off, i, r) (A(i, r), or H(i, r) where `term`, as it stages them).

// Rows of the largest tile (128 × 128).
const SCALED_ROWS: u32 = 128u;

// The rows' largest magnitudes as bits: a non-negative f32's bits order as its value does.
var<workgroup> row_max_bits: array<atomic<u32>, SCALED_ROWS>;
var<workgroup> row_scale: array<f32, SCALED_ROWS>;

// The scales of this workgroup's rows i0.. of A over its reduction steps r_begin..r_end,
// and of H over the term's rank where it adds one (`with_term`), where the launch scales rows.
fn scale_rows(with_term: bool, a_off: u32, i0: u32, r_begin: u32, r_end: u32, flat: u32) {
    if (p.scale_rows == 0u) {
        return;
    }
    for (var r = flat; r < SCALED_ROWS; r += staged_invocations()) {
        atomicStore(&row_max_bits[r], 0u);
    }
    workgroupBarrier();
    for (var s = 0u; s < select(1u, 2u, with_term); s++) {
        let term = s == 1u;
        let lo = select(r_begin, 0u, term);
        let span = select(r_end, p.term_r, term) - lo;
        if (staged_along_r(term)) {
            row_maxima_along_r(term, a_off, i0, lo, span, flat);
        } else {
            row_maxima_across(term, a_off, i0, lo, span, flat);
        }
    }
    workgroupBarrier();
    for (var r = flat; r < SCALED_ROWS; r += staged_invocations()) {
        let m = bitcast<f32>(atomicLoad(&row_max_bits[r]));
        var s = 1.0;
        if (m > 0.0) {
            // m < 2^e; the clamp keeps both the scale and its inverse finite
            s = exp2(f32(clamp(14 - frexp(m).exp, -120, 120)));
        }
        row_scale[r] = s;
    }
    workgroupBarrier();
}

// The rows' largest magnitudes over steps lo..lo + span where the operand runs along r (an
// input gradient's A): each row by a group of ROW_GROUP invocations, at consecutive steps
// (consecutive addresses), eight loads in flight per invocation, the groups on rows apart.
// (One value a turn, as the walk below reads, each load waited for the one before it: at
// 4096 steps a row, a tile's rows took some 4,000 round trips to memory before the product
// began, as long as the product itself. And a row's maximum is noted by its group alone, not
// by every invocation at once on the same word of workgroup memory.)
fn row_maxima_along_r(term: bool, a_off: u32, i0: u32, lo: u32, span: u32, flat: u32) {
    let rows = staged_rows();
    let lane = flat % ROW_GROUP;
    let groups = staged_invocations() / ROW_GROUP;
    for (var row = flat / ROW_GROUP; row < rows && i0 + row < p.M; row += groups) {
        let i = i0 + row;
        var m = vec4<f32>();
        for (var r = lane; r < span; r += 8u * ROW_GROUP) {
            let g = ROW_GROUP;
            let a = vec4<f32>(row_value(term, a_off, i, lo, span, r), row_value(term, a_off, i, lo, span, r + g),
                              row_value(term, a_off, i, lo, span, r + 2u * g), row_value(term, a_off, i, lo, span, r + 3u * g));
            let b = vec4<f32>(row_value(term, a_off, i, lo, span, r + 4u * g), row_value(term, a_off, i, lo, span, r + 5u * g),
                              row_value(term, a_off, i, lo, span, r + 6u * g), row_value(term, a_off, i, lo, span, r + 7u * g));
            m = max(m, max(abs(a), abs(b)));
        }
        note_row_max(row, rows, max(max(m.x, m.y), max(m.z, m.w)));
    }
}

// Invocations per row in row_maxima_along_r: 8 consecutive steps are 32 bytes, a whole
// sector of memory; every includer's workgroup is a multiple of 8 (32 to 256 invocations).
const ROW_GROUP: u32 = 8u;

// Step r of row i's span (the span's last step past it: read again, it leaves the maximum as
// it is).
fn row_value(term: bool, a_off: u32, i: u32, lo: u32, span: u32, r: u32) -> f32 {
    return staged_value(term, a_off, i, lo + min(r, span - 1u));
}

// The rows' largest magnitudes where the operand runs across the rows: read in the order they
// are staged, each invocation noting its largest magnitude as its row changes.
fn row_maxima_across(term: bool, a_off: u32, i0: u32, lo: u32, span: u32, flat: u32) {
    let rows = staged_rows();
    var row = rows;
    var m = 0.0;
    for (var e = flat; e < rows * span; e += staged_invocations()) {
        let at = e % rows;
        if (at != row) {
            note_row_max(row, rows, m);
            row = at;
            m = 0.0;
        }
        if (i0 + row < p.M) {
            m = max(m, abs(staged_value(term, a_off, i0 + row, lo + e / rows)));
        }
    }
    note_row_max(row, rows, m);
}

// Notes an invocation's largest magnitude `m` in row `row` of the tile (none past its rows).
fn note_row_max(row: u32, rows: u32, m: f32) {
    if (row < rows && m > 0.0) {
        atomicMax(&row_max_bits[row], bitcast<u32>(m));
    }
}

// (selects, not branches: a branch around each staged value kept ACO from issuing a stage's
// loads together, each waiting on memory before the next began; × 1 and ÷ 1 are exact)
fn row_scaled(row: u32, v: f32) -> f32 {
    return v * select(1.0, row_scale[row], p.scale_rows != 0u);
}

fn row_unscaled(row: u32, v: f32) -> f32 {
    return v / select(1.0, row_scale[row], p.scale_rows != 0u);
}
