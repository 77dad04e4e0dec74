// The quantized forward and input gradient on cooperative matrices (pieces/coop_gemm.wgsl),
// where the device has them and the context asks for f16 matmuls:
//   matmul_quant_forward_coop:        out(M,N) = beta · out + alpha · inp(M,K) · Wᵀ
//   matmul_quant_backward_input_coop: out(M,K) = beta · out + alpha · inp(M,N) · W
// each plus a low-rank term (QLoRA's h·Bᵀ, dropout(dh·A); the launcher binds placeholders
// for H and V where there is none, rank 0). W is decoded 8 weights at a time (`dequant8`) as
// it is staged, into f16: the forward's B(j, r) = W(j, r) along a row of W, the input
// gradient's B(j, r) = W(r, j) across its rows. A split reduction's parts write their own
// M × out_cols slices of a scratch, as quant_tiled.wgsl's do; the input gradient's inp (and
// H) may lie in column blocks, as may the forward's out. K is a multiple of 8.
// core/build/ composes matmul_<format>_coop.wgsl from matmul/quant.wgsl, the format's file
// with H and V bound before `out`, and this file (and matmul_<format>_coop_8x8.wgsl with
// pieces/coop_8x8.wgsl in pieces/coop_16x16.wgsl's place), with `enable`s first.

// #include "../pieces/low_rank_term.wgsl"
// #include "../pieces/column_blocks.wgsl"
// #include "quant_inp.wgsl"
// #include "../pieces/coop_gemm.wgsl"

fn reduction_end(forward: bool) -> u32 { return select(p.N, p.K, forward); }
fn out_cols(forward: bool) -> u32 { return select(p.K, p.N, forward); }
fn term_masked() -> bool { return p.drop_p > 0.0; }
fn a_offset(z: u32) -> u32 { return 0u; }

// Both stages take their passes four at a time: every value of the four loaded first (a
// weight's block decoded), each from a clamped index (0 where it lies outside the product),
// then each stored, zeroed where outside. A load under a branch waits for the branch, and the
// passes' loads would reach memory one round trip at a time (as matmul_tiled.wgsl's load_a).

// Four consecutive values of inp's row per invocation and pass, consecutive invocations taking
// the next four: one aligned vec4 load where inp is not in blocks (its rows, K or N long, are
// multiples of 4, as are r0 and r). A stage that lies inside inp (every stage but the edges',
// where inp is not in blocks) is staged with no bounds to test (`bounded` false: a constant
// where stage_a_walk is called, so that its tests go with the inlining).
fn stage_a(forward: bool, a_off: u32, i0: u32, r0: u32, r_end: u32, flat: u32) {
    if (p.a_block2 == 0u && i0 + TILE <= p.M && r0 + BK <= r_end) {
        stage_a_walk(false, forward, i0, r0, r_end, flat);
    } else {
        stage_a_walk(true, forward, i0, r0, r_end, flat);
    }
}

fn stage_a_walk(bounded: bool, forward: bool, i0: u32, r0: u32, r_end: u32, flat: u32) {
    let stride = reduction_end(forward);
    let end = TILE * BK / 4u;
    for (var e0 = flat; e0 < end; e0 += 4u * WG) {
        // (the four passes written out: see pieces/held_values.wgsl)
        let passes = mat4x4<f32>(inp_pass(bounded, stride, i0, r0, r_end, end, e0), inp_pass(bounded, stride, i0, r0, r_end, end, e0 + WG),
                                 inp_pass(bounded, stride, i0, r0, r_end, end, e0 + 2u * WG), inp_pass(bounded, stride, i0, r0, r_end, end, e0 + 3u * WG));
        for (var n = 0u; n < 4u; n++) {
            let e = e0 + n * WG;
            if (!past_stage(end, e)) {
                let row = e / (BK / 4u);
                let r = 4u * (e % (BK / 4u));
                let inside = vec4<bool>(!bounded) | ((vec4<u32>(r0 + r) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(r_end)) & vec4<bool>(i0 + row < p.M));
                // (the row's scale: row_scaled of 1)
                let v = select(vec4<f32>(), column_of(passes, n), inside) * row_scaled(row, 1.0);
                put_tile4(false, row * LD + r, to_tile4(v));
            }
        }
    }
}

// Pass e's four values of inp (row i0 + e / (BK / 4), steps from r0 + 4·(e % (BK / 4))), from
// index 0 outside the product (or past the stage: tested only where `bounded`): one aligned
// vec4 where inp is not in blocks.
fn inp_pass(bounded: bool, stride: u32, i0: u32, r0: u32, r_end: u32, end: u32, e: u32) -> vec4<f32> {
    let i = i0 + e / (BK / 4u);
    let r = r0 + 4u * (e % (BK / 4u));
    if (!bounded) {
        return inp[select(0u, (i * stride + r) / 4u, !past_stage(end, e))];
    }
    let inside = !past_stage(end, e) & (i < p.M);
    if (p.a_block2 == 0u) {
        return inp[select(0u, (i * stride + r) / 4u, inside & (r < r_end))];
    }
    return vec4<f32>(inp_word(select(0u, inp_index(i, r, stride), inside & (r < r_end))), inp_word(select(0u, inp_index(i, r + 1u, stride), inside & (r + 1u < r_end))),
                     inp_word(select(0u, inp_index(i, r + 2u, stride), inside & (r + 2u < r_end))), inp_word(select(0u, inp_index(i, r + 3u, stride), inside & (r + 3u < r_end))));
}

// Whether pass e lies past a stage of `end` passes. The loops take four passes per invocation
// at a time from `flat`, so none does where `end` is a multiple of 4 · WG (A's passes, and
// B's in tiles of 128, at 128 invocations): there the test folds to a constant false, and no
// pass pays for it.
fn past_stage(end: u32, e: u32) -> bool {
    return end % (4u * WG) != 0u && e >= end;
}

// What pieces/row_scales.wgsl's scale_rows reads (the launcher scales the rows of input
// gradients only, whose inp has N columns).
fn staged_rows() -> u32 { return TILE; }
fn staged_invocations() -> u32 { return WG; }
fn staged_along_r(term: bool) -> bool { return true; }
fn staged_value(term: bool, a_off: u32, i: u32, r: u32) -> f32 {
    if (term) {
        return term_h_at(term_h_index(i, r));
    }
    return inp_at(i, r, p.N);
}

// The forward's pass e: eight consecutive weights along a row of W (W(j0 + col, r0 + g ..)):
// W's row and group of 8 (x, y), and where they go in tile_b (z: a multiple of 8).
fn b_eight(j0: u32, r0: u32, e: u32) -> vec3<u32> {
    let col = e / (BK / 8u);
    let g = 8u * (e % (BK / 8u));
    return vec3<u32>(j0 + col, (r0 + g) / 8u, col * LD + g);
}

// Whether the forward's pass e, at `at` (b_eight's), lies inside the product.
fn b_eight_inside(at: vec3<u32>, r0: u32, r_end: u32, e: u32) -> bool {
    return (at.x < p.N) & (r0 + 8u * (e % (BK / 8u)) < r_end);
}

// The forward's pass e's eight weights, decoded from block 0 where they lie outside the
// product (or past the stage: tested only where `bounded`); none where the pass is not
// `taken` (a constant).
fn b_pass(taken: bool, bounded: bool, j0: u32, r0: u32, r_end: u32, end: u32, e: u32) -> array<vec4<f32>, 2> {
    if (!taken) {
        return array<vec4<f32>, 2>();
    }
    let at = b_eight(j0, r0, e);
    let inside = !past_stage(end, e) & (!bounded | b_eight_inside(at, r0, r_end, e));
    return dequant8(select(0u, at.x, inside), select(0u, at.y, inside));
}

// As stage_a: a stage inside W (B's TILE columns from j0, BK steps from r0) with no bounds.
fn stage_b(forward: bool, z: u32, j0: u32, r0: u32, r_end: u32, flat: u32) {
    if (j0 + TILE <= out_cols(forward) && r0 + BK <= r_end) {
        stage_b_walk(false, forward, j0, r0, r_end, flat);
    } else {
        stage_b_walk(true, forward, j0, r0, r_end, flat);
    }
}

fn stage_b_walk(bounded: bool, forward: bool, j0: u32, r0: u32, r_end: u32, flat: u32) {
    if (!forward) {
        stage_b_quads(bounded, j0, r0, r_end, flat);
        return;
    }
    let end = TILE * BK / 8u;
    // In tiles of 64 each invocation has two passes (at 128 invocations), and a group of four
    // takes only those: the other two would decode a block for nothing.
    let taken = min(4u, (end + WG - 1u) / WG);
    for (var e0 = flat; e0 < end; e0 += 4u * WG) {
        // the four passes' weights decoded, each pass's first four in `lo`, the rest in `hi`
        // (matrices read by column_of, not an array indexed in a loop)
        let w0 = b_pass(true, bounded, j0, r0, r_end, end, e0);
        let w1 = b_pass(1u < taken, bounded, j0, r0, r_end, end, e0 + WG);
        let w2 = b_pass(2u < taken, bounded, j0, r0, r_end, end, e0 + 2u * WG);
        let w3 = b_pass(3u < taken, bounded, j0, r0, r_end, end, e0 + 3u * WG);
        let lo = mat4x4<f32>(w0[0], w1[0], w2[0], w3[0]);
        let hi = mat4x4<f32>(w0[1], w1[1], w2[1], w3[1]);
        for (var n = 0u; n < taken; n++) {
            let e = e0 + n * WG;
            if (!past_stage(end, e)) {
                let at = b_eight(j0, r0, e);
                let inside = !bounded | b_eight_inside(at, r0, r_end, e);
                put_tile4(true, at.z, to_tile4(select(vec4<f32>(), column_of(lo, n), inside)));
                put_tile4(true, at.z + 4u, to_tile4(select(vec4<f32>(), column_of(hi, n), inside)));
            }
        }
    }
}

// The input gradient's stage of B (TILE columns from j0: W's, BK steps from r0: W's rows) in
// quads: four consecutive rows r of W by a group of eight of its columns, decoded (zero
// outside the product, tested only where `bounded`), then transposed into those eight columns
// of B, four consecutive steps each: eight stores, not 32. Quad `flat` + q·WG of the stage's
// TILE / 8 × BK / 4; consecutive invocations take consecutive quads of rows of the same
// group, so that eight fill 64 bytes of a column of the tile.
fn stage_b_quads(bounded: bool, j0: u32, r0: u32, r_end: u32, flat: u32) {
    for (var q = flat; q < TILE * BK / 32u; q += WG) {
        let r = 4u * (q % (BK / 4u));
        let g = 8u * (q / (BK / 4u));
        // (the four rows written out: see pieces/held_values.wgsl)
        let w0 = b_row_eight(bounded, j0, r0 + r, r_end, g);
        let w1 = b_row_eight(bounded, j0, r0 + r + 1u, r_end, g);
        let w2 = b_row_eight(bounded, j0, r0 + r + 2u, r_end, g);
        let w3 = b_row_eight(bounded, j0, r0 + r + 3u, r_end, g);
        // column t: column g + t of B (g + 4 + t for hi) at the four steps
        let lo = transpose(mat4x4<f32>(w0[0], w1[0], w2[0], w3[0]));
        let hi = transpose(mat4x4<f32>(w0[1], w1[1], w2[1], w3[1]));
        for (var t = 0u; t < 4u; t++) {
            put_tile4(true, (g + t) * LD + r, to_tile4(column_of(lo, t)));
            put_tile4(true, (g + 4u + t) * LD + r, to_tile4(column_of(hi, t)));
        }
    }
}

// Columns j0 + g .. j0 + g + 7 of W's row `row` (B's columns at step `row`), decoded; zero
// outside the product (tested only where `bounded`).
fn b_row_eight(bounded: bool, j0: u32, row: u32, r_end: u32, g: u32) -> array<vec4<f32>, 2> {
    let group = (j0 + g) / 8u;
    let inside = !bounded | ((row < r_end) & (8u * group < p.K));
    let w = dequant8(select(0u, row, inside), select(0u, group, inside));
    return array<vec4<f32>, 2>(select(vec4<f32>(), w[0], inside), select(vec4<f32>(), w[1], inside));
}

// (a split reduction's parts go to their scratch as they are; its sum into the blocks)
fn out_index(forward: bool, z: u32, i: u32, j: u32) -> u32 {
    let ncols = out_cols(forward);
    if (p.c_block2 != 0u && p.splits <= 1u) {
        return block_index(i, j, vec2<u32>(p.c_block2, p.c_block3), vec2<u32>(p.c_block2_at, p.c_block3_at), ncols);
    }
    return (z * p.M + i) * ncols + j;
}
fn out_at(idx: u32) -> f32 { return out[idx]; }
fn set_out(idx: u32, v: f32) { out[idx] = v; }

@compute @workgroup_size(WG)
fn matmul_quant_forward_coop(@builtin(workgroup_id) wid: vec3<u32>,
                             @builtin(local_invocation_index) flat: u32,
                             @builtin(subgroup_id) sg: u32,
                             @builtin(num_subgroups) subgroups: u32) {
    coop_gemm(wid, flat, sg, subgroups, true);
}

@compute @workgroup_size(WG)
fn matmul_quant_backward_input_coop(@builtin(workgroup_id) wid: vec3<u32>,
                                    @builtin(local_invocation_index) flat: u32,
                                    @builtin(subgroup_id) sg: u32,
                             @builtin(num_subgroups) subgroups: u32) {
    coop_gemm(wid, flat, sg, subgroups, false);
}
