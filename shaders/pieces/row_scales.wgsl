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
// Use: row_scales_clear, workgroupBarrier, row_scales_note for each value the workgroup will
// stage (its row within the tile), workgroupBarrier, row_scales_settle, workgroupBarrier; then
// row_scaled(row, v) as a value is staged and row_unscaled(row, v) as an output is stored.

// Rows of the largest tile (128 × 128).
const SCALED_ROWS: u32 = 128u;

// The rows' largest magnitudes as bits: a non-negative f32's bits order as its value does.
var<workgroup> row_max_bits: array<atomic<u32>, SCALED_ROWS>;
var<workgroup> row_scale: array<f32, SCALED_ROWS>;

fn row_scales_clear(flat: u32, invocations: u32) {
    for (var r = flat; r < SCALED_ROWS; r += invocations) {
        atomicStore(&row_max_bits[r], 0u);
    }
}

// Notes one invocation's largest magnitude `m` in row `row` of the tile.
fn row_scales_note(row: u32, m: f32) {
    if (m > 0.0) {
        atomicMax(&row_max_bits[row], bitcast<u32>(m));
    }
}

fn row_scales_settle(flat: u32, invocations: u32) {
    for (var r = flat; r < SCALED_ROWS; r += invocations) {
        let m = bitcast<f32>(atomicLoad(&row_max_bits[r]));
        var s = 1.0;
        if (m > 0.0) {
            // m < 2^e; the clamp keeps both the scale and its inverse finite
            s = exp2(f32(clamp(14 - frexp(m).exp, -120, 120)));
        }
        row_scale[r] = s;
    }
}

fn row_scaled(row: u32, v: f32) -> f32 {
    if (p.scale_rows == 0u) {
        return v;
    }
    return v * row_scale[row];
}

fn row_unscaled(row: u32, v: f32) -> f32 {
    if (p.scale_rows == 0u) {
        return v;
    }
    return v / row_scale[row];
}
