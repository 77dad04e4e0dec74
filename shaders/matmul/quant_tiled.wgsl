// The quantized matmuls for real GPUs: matmul_tiled.wgsl's workgroup tiles (each invocation
// an 8 × 8 block of out as four 4 × 4 quarters; 8 reduction steps staged per iteration in
// workgroup memory, the next ones loaded into registers while these are summed), with W
// decoded 8 weights at a time (`dequant8`) as it is staged, so that each weight is decoded
// once per workgroup. core/build/ appends this file to every
// matmul_<format>.wgsl, after the format's own file.
//   matmul_quant_forward_tiled:        out(M,N) = beta · out + alpha · inp(M,K) · Wᵀ
//   matmul_quant_backward_input_tiled: out(M,K) = beta · out + alpha · inp(M,N) · W
//   matmul_quant_gemv:                 the forward for at most 4 rows of inp (decoding)
// The launcher sets TQ (invocations per side: 8 or 16). A long reduction is split as
// matmul_tiled.wgsl's is: z is the part, writing its own M × ncols slice of a scratch.
// core/build/ also composes matmul_<format>_low_rank.wgsl from the format's file and this
// one (not the generated entry points), with a low-rank term's H and V bound before `out` and
// pieces/low_rank_term.wgsl in low_rank_none.wgsl's place: the tiled entry points then add
// the term after the reduction, as matmul_tiled.wgsl does (LoRA's h·Bᵀ, dropout(dh·A)).
// And it composes that once more with pieces/tile_f16.wgsl in tile_f32.wgsl's place, as
// matmul_<format>_f16_tiles.wgsl: the tiles in f16, the sums in f32 (forwards and input
// gradients where the context asks for f16, the gradients' rows scaled: pieces/row_scales.wgsl;
// the launcher binds placeholders for H and V where there is no term).

// #include "../pieces/low_rank_none.wgsl"
// #include "../pieces/dropout_mask.wgsl"
// #include "../pieces/tile_f32.wgsl"
// #include "../pieces/gated_activations.wgsl"
// #include "../pieces/input_norm_none.wgsl"
// #include "../pieces/column_blocks.wgsl"
// #include "../pieces/block_fma.wgsl"
// #include "../pieces/block_place.wgsl"
// #include "../pieces/held_values.wgsl"
// #include "quant_inp.wgsl"

override TQ: u32 = 8u;
// Each step's values loaded during the previous step's sums, or just before they are staged
// (as matmul_tiled.wgsl's PREFETCH).
override PREFETCH: bool = true;

var<workgroup> qt_a: array<vec4<TileElem>, 8u * (2u * TQ + 1u)>; // [r][row]: inp
var<workgroup> qt_b: array<vec4<TileElem>, 8u * (2u * TQ + 1u)>; // [r][col]: W

// What pieces/row_scales.wgsl's scale_rows reads (f16 tiles; the launcher scales the rows of
// input gradients only, whose inp has N columns).
fn staged_rows() -> u32 { return 8u * TQ; }
fn staged_invocations() -> u32 { return TQ * TQ; }
fn staged_along_r(term: bool) -> bool { return true; }
fn staged_value(term: bool, a_off: u32, i: u32, r: u32) -> f32 {
    if (term) {
        return term_h_at(term_h_index(i, r));
    }
    return inp_at(i, r, p.N);
}

fn qt_put(r: u32, col: u32, v: f32) {
    qt_b[r * (2u * TQ + 1u) + col / 4u][col % 4u] = to_tile(v);
}

// H(i0 + row, q) into qt_a[q][row] and term_scale·V(j0 + col, q) into qt_b[q][col], for
// q0 ≤ q < q0 + 8 (zero past the term's rank and the output's edges).
fn qt_stage_term(i0: u32, j0: u32, q0: u32, ncols: u32, flat: u32) {
    let side = 8u * TQ;
    for (var e = flat; e < side * 8u; e += TQ * TQ) {
        let row = e / 8u;
        let q = q0 + e % 8u;
        var h = 0.0;
        var v = 0.0;
        if (q < p.term_r) {
            if (i0 + row < p.M) {
                h = term_h_at(term_h_index(i0 + row, q));
            }
            let at = term_v_index(j0 + row, q);
            if (j0 + row < ncols && at >= 0) {
                v = p.term_scale * term_v_at(u32(at));
            }
        }
        qt_a[(e % 8u) * (2u * TQ + 1u) + row / 4u][row % 4u] = to_tile(row_scaled(row, h));
        qt_put(e % 8u, row, v);
    }
}

// out[z, i, j..j+4] = alpha·v + beta·out for the columns below ncols; or, for a masked term
// (`term`), out += alpha·dropout(v).
fn qt_store(z: u32, i: u32, j: u32, ncols: u32, v: vec4<f32>, term: bool) {
    if (i >= p.M) {
        return;
    }
    for (var t = 0u; t < 4u; t++) {
        if (j + t < ncols) {
            var idx = (z * p.M + i) * ncols + j + t;
            // (a split reduction's parts go to their scratch as they are; its sum into the blocks)
            if (p.c_block2 != 0u && p.splits <= 1u) {
                idx = block_index(i, j + t, vec2<u32>(p.c_block2, p.c_block3), vec2<u32>(p.c_block2_at, p.c_block3_at), ncols);
            }
            // (i's row in the tile: i0 is a multiple of its rows)
            let prod = row_unscaled(i % (8u * TQ), p.alpha * v[t]);
            if (term) {
                let keep = dropout_keep(vec4<u32>(idx), p.drop_seed, p.drop_p).x;
                out[idx] += select(0.0, prod / (1.0 - p.drop_p), keep);
                continue;
            }
            var o = prod;
            if (p.beta != 0.0) {
                o += p.beta * out[idx];
            }
            out[idx] = o;
        }
    }
}

// A 4 × 4 quarter of an invocation's block, its columns named (as matmul_tiled.wgsl's
// store_quarter).
fn qt_store_quarter(z: u32, i: u32, j: u32, ncols: u32, acc: mat4x4<f32>, term: bool) {
    qt_store(z, i, j, ncols, acc[0], term);
    qt_store(z, i + 1u, j, ncols, acc[1], term);
    qt_store(z, i + 2u, j, ncols, acc[2], term);
    qt_store(z, i + 3u, j, ncols, acc[3], term);
}

// An invocation's 8 × 8 block (rows ia.. and ib.., columns ja.. and jb..).
fn qt_store_block(z: u32, ia: u32, ib: u32, ja: u32, jb: u32, ncols: u32, acc00: mat4x4<f32>,
                  acc01: mat4x4<f32>, acc10: mat4x4<f32>, acc11: mat4x4<f32>, term: bool) {
    qt_store_quarter(z, ia, ja, ncols, acc00, term);
    qt_store_quarter(z, ia, jb, ncols, acc01, term);
    qt_store_quarter(z, ib, ja, ncols, acc10, term);
    qt_store_quarter(z, ib, jb, ncols, acc11, term);
}

// What an invocation stages of the product per iteration: its values of inp (8·TQ rows by 8
// steps over TQ² invocations: 8 or 4) and the 8 weights it decodes (those with flat < 8·TQ),
// loaded before the previous iteration's sums so that their latency hides behind them, or
// (PREFETCH off) just before they are written (qt_load_product), then written to the tiles
// (qt_put_product). As in matmul_tiled.wgsl, each is loaded whether or not it lies inside the
// product (from index 0, or block 0, where it does not; qt_put_product zeroes it), so that the
// loads are one run with no branch between them, all in flight together. inp's values are
// held in two vec4s, loaded by calls written out (as matmul_tiled.wgsl's Staged: not an array
// filled in a loop, which a compiler that does not unroll the loop keeps in memory).
struct QtStaged {
    inp_lo: vec4<f32>,
    inp_hi: vec4<f32>,
    w: array<vec4<f32>, 2>,
}

// How many of inp's values an invocation stages per iteration (8 or 4).
fn qt_inp_staged() -> u32 { return 64u / TQ; }

// The walk's k-th value of inp: row i0 + (flat + k·TQ²) / 8 at step r (0's word outside the
// product).
fn qt_inp_value(i0: u32, r: u32, r_end: u32, reduce: u32, flat: u32, k: u32) -> f32 {
    let i = i0 + (flat + k * TQ * TQ) / 8u;
    return inp_word(select(0u, inp_index(i, r, reduce), (i < p.M) & (r < r_end)));
}

// Walk step e's value of inp into qt_a[r][row].
fn qt_put_inp(e: u32, v: f32) {
    let row = e / 8u;
    qt_a[(e % 8u) * (2u * TQ + 1u) + row / 4u][row % 4u] = to_tile(v);
}

// Weight t of the 8 an invocation decoded into qt_b: of column `flat` at step t (the
// forward), or of step flat / TQ at column 8·(flat % TQ) + t (the input gradient).
fn qt_put_weight(forward: bool, flat: u32, t: u32, v: f32) {
    if (forward) {
        qt_put(t, flat, v);
    } else {
        qt_put(flat / TQ, 8u * (flat % TQ) + t, v);
    }
}

// The 8 weights, written out (not a loop indexing the array).
fn qt_put_weights(forward: bool, flat: u32, w: array<vec4<f32>, 2>) {
    let lo = w[0];
    let hi = w[1];
    qt_put_weight(forward, flat, 0u, lo.x);
    qt_put_weight(forward, flat, 1u, lo.y);
    qt_put_weight(forward, flat, 2u, lo.z);
    qt_put_weight(forward, flat, 3u, lo.w);
    qt_put_weight(forward, flat, 4u, hi.x);
    qt_put_weight(forward, flat, 5u, hi.y);
    qt_put_weight(forward, flat, 6u, hi.z);
    qt_put_weight(forward, flat, 7u, hi.w);
}

// Whether the 8 weights an invocation decodes lie inside the product: of column j0 + flat for
// the forward; of row r0 + flat / TQ at the flat % TQ-th 8 of its columns j0.. for the input
// gradient.
fn qt_weights_inside(forward: bool, j0: u32, r0: u32, r_end: u32, flat: u32) -> bool {
    if (forward) {
        return j0 + flat < p.N;
    }
    return (r0 + flat / TQ < r_end) & (j0 + 8u * (flat % TQ) < p.K);
}

// inp(i0.., r0..) along the walk e = flat + k·TQ² (row e / 8, step e % 8), and W's 8 weights
// (W(j, r) for the forward, W(r, j) for the input gradient); those outside the product are
// qt_put_product's to zero.
fn qt_load_product(forward: bool, i0: u32, j0: u32, r0: u32, r_end: u32, reduce: u32, flat: u32) -> QtStaged {
    var staged: QtStaged;
    // (the walk keeps its step and moves TQ² / 8 rows at a time)
    let r = r0 + flat % 8u;
    staged.inp_lo = vec4<f32>(qt_inp_value(i0, r, r_end, reduce, flat, 0u), qt_inp_value(i0, r, r_end, reduce, flat, 1u),
                              qt_inp_value(i0, r, r_end, reduce, flat, 2u), qt_inp_value(i0, r, r_end, reduce, flat, 3u));
    if (qt_inp_staged() > 4u) {
        staged.inp_hi = vec4<f32>(qt_inp_value(i0, r, r_end, reduce, flat, 4u), qt_inp_value(i0, r, r_end, reduce, flat, 5u),
                                  qt_inp_value(i0, r, r_end, reduce, flat, 6u), qt_inp_value(i0, r, r_end, reduce, flat, 7u));
    }
    if (flat < 8u * TQ) {
        let inside = qt_weights_inside(forward, j0, r0, r_end, flat);
        if (forward) {
            staged.w = dequant8(select(0u, j0 + flat, inside), select(0u, r0 / 8u, inside));
        } else {
            staged.w = dequant8(select(0u, r0 + flat / TQ, inside), select(0u, j0 / 8u + flat % TQ, inside));
        }
    }
    return staged;
}

// qt_load_product's values into qt_a[r][row] and qt_b[r][col]: zero outside the product (past
// r_end and the edges), inp's rows scaled where the launch scales rows.
fn qt_put_product(forward: bool, staged: QtStaged, i0: u32, j0: u32, r0: u32, r_end: u32, flat: u32) {
    let step_inside = r0 + flat % 8u < r_end;
    for (var k = 0u; k < qt_inp_staged(); k++) {
        let e = flat + k * TQ * TQ;
        let row = e / 8u;
        qt_put_inp(e, select(0.0, row_scaled(row, one_of_eight(staged.inp_lo, staged.inp_hi, k)), step_inside & (i0 + row < p.M)));
    }
    if (flat < 8u * TQ) {
        let inside = qt_weights_inside(forward, j0, r0, r_end, flat);
        qt_put_weights(forward, flat, array<vec4<f32>, 2>(select(vec4<f32>(), staged.w[0], inside), select(vec4<f32>(), staged.w[1], inside)));
    }
}

// The accumulation both entry points share, over `reduce` steps; `forward` picks the
// product (qt_stage_product).
fn qt_matmul(wid: vec3<u32>, lid: vec3<u32>, forward: bool) {
    let i0 = wid.y * 8u * TQ;
    let j0 = wid.x * 8u * TQ;
    let flat = lid.y * TQ + lid.x;
    let s = 2u * TQ + 1u;
    let reduce = select(p.N, p.K, forward);
    let ncols = select(p.K, p.N, forward);
    var acc00 = mat4x4<f32>();
    var acc01 = mat4x4<f32>();
    var acc10 = mat4x4<f32>();
    var acc11 = mat4x4<f32>();
    var r_begin = 0u;
    var r_end = reduce;
    if (p.splits > 1u) {
        r_begin = wid.z * p.r_split;
        r_end = min(reduce, r_begin + p.r_split);
    }
    // (this invocation's place in the grid of blocks: pieces/block_place.wgsl)
    let place = block_place(flat, TQ, false);
    let ia = i0 + 4u * place.y;
    let ib = i0 + 4u * TQ + 4u * place.y;
    let ja = j0 + 4u * place.x;
    let jb = j0 + 4u * TQ + 4u * place.x;
    let z = select(0u, wid.z, p.splits > 1u);
    // the reduction's part, then the low-rank term's steps (by the first part), as in
    // matmul_tiled.wgsl; with dropout on the term, the product is stored first
    let segments = select(1u, 2u, LOW_RANK && wid.z == 0u);
    let masked_term = segments == 2u && p.drop_p > 0.0;
    scale_rows(segments == 2u, 0u, i0, r_begin, r_end, flat);
    for (var seg = 0u; seg < segments; seg++) {
        let term = seg == 1u;
        if (term && masked_term) {
            qt_store_block(z, ia, ib, ja, jb, ncols, acc00, acc01, acc10, acc11, false);
            acc00 = mat4x4<f32>();
            acc01 = mat4x4<f32>();
            acc10 = mat4x4<f32>();
            acc11 = mat4x4<f32>();
        }
        let lo = select(r_begin, 0u, term);
        let hi = select(r_end, p.term_r, term);
        // (the term's steps, a rank's few, are staged as they come)
        var staged: QtStaged;
        if (PREFETCH && !term) {
            staged = qt_load_product(forward, i0, j0, lo, hi, reduce, flat);
        }
        for (var r0 = lo; r0 < hi; r0 += 8u) {
            if (term) {
                qt_stage_term(i0, j0, r0, ncols, flat);
            } else {
                if (!PREFETCH) {
                    staged = qt_load_product(forward, i0, j0, r0, hi, reduce, flat);
                }
                qt_put_product(forward, staged, i0, j0, r0, hi, flat);
            }
            workgroupBarrier();
            // the next iteration's values on their way while this one's are summed
            if (PREFETCH && !term && r0 + 8u < hi) {
                staged = qt_load_product(forward, i0, j0, r0 + 8u, hi, reduce, flat);
            }
            for (var r = 0u; r < 8u; r++) {
                let a0 = vec4<f32>(qt_a[r * s + place.y]);
                let a1 = vec4<f32>(qt_a[r * s + TQ + place.y]);
                let b0 = vec4<f32>(qt_b[r * s + place.x]);
                let b1 = vec4<f32>(qt_b[r * s + TQ + place.x]);
                block_fma(&acc00, a0, b0);
                block_fma(&acc01, a0, b1);
                block_fma(&acc10, a1, b0);
                block_fma(&acc11, a1, b1);
            }
            workgroupBarrier();
        }
    }
    qt_store_block(z, ia, ib, ja, jb, ncols, acc00, acc01, acc10, acc11, masked_term);
}

@compute @workgroup_size(TQ, TQ, 1)
fn matmul_quant_forward_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    qt_matmul(wid, lid, true);
}

@compute @workgroup_size(TQ, TQ, 1)
fn matmul_quant_backward_input_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    qt_matmul(wid, lid, false);
}

// The forward of at most 16 rows of inp (decoding: a token, or a server's batch of a few) on
// GPUs: one workgroup of 64 invocations per row j of W, each decoding groups of 8 weights
// along K (consecutive invocations take consecutive groups) once for all the rows, then a sum
// over the workgroup (pieces/gemv_sum.wgsl; on subgroup operations in the `_subgroups`
// variants), and the low-rank term where composed with one (LoRA's h·Bᵀ:
// pieces/low_rank_term.wgsl's gemv_term). Composed with an input norm
// (matmul_<format>_normed.wgsl, pieces/input_norm.wgsl), each row of inp is normed as it is
// read, as matmul_tiled.wgsl's matmul_gemv does. The grid folds rows past 65535 into y.
override GATE_GELU: bool = false; // (the gated kernel's activation, declared before GEMV_QUADS)
// #include "../pieces/gemv_rows.wgsl"
// #include "../pieces/gemv_sum.wgsl"

// One step of the reduction: 8 weights of the row (gate's, then up's where gated), as two
// vec4s each.
alias GemvWeights = array<array<vec4<f32>, 2>, 2>;

// Row i's products with w's two sets of weights 8g .. 8g + 8, and its squares there.
fn gemv_products(i: u32, g: u32, w: GemvWeights) -> vec3<f32> {
    let x = i * (p.K / 4u) + 2u * g;
    let x0 = inp[x];
    let x1 = inp[x + 1u];
    return vec3<f32>(dot(x0, w[0][0]) + dot(x1, w[0][1]), dot(x0, w[1][0]) + dot(x1, w[1][1]), dot(x0, x0) + dot(x1, x1));
}

// Weights 8g .. 8g + 8 of W's row n, the input norm's weights there (`nw`) folded in.
fn qg_normed8(n: u32, g: u32, nw: array<vec4<f32>, 2>) -> array<vec4<f32>, 2> {
    let w = dequant8(n, g);
    return array<vec4<f32>, 2>(w[0] * nw[0], w[1] * nw[1]);
}

// The input norm's weights 8g .. 8g + 8 (ones without a norm).
fn qg_norm8(g: u32) -> array<vec4<f32>, 2> {
    return array<vec4<f32>, 2>(norm_weight4(2u * g), norm_weight4(2u * g + 1u));
}

// Groups an invocation decodes before it adds any (their loads in flight together, as
// matmul_tiled.wgsl's GEMV_UNROLL steps; two: each group is already a few words, and the
// decoded weights take registers). Added in order: the same sums as one at a time.
const QGEMV_UNROLL: u32 = 2u;

@compute @workgroup_size(64)
fn matmul_quant_gemv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, lane: GemvLane) {
    let lid = lane.index;
    let j = wid.x + wid.y * nwg.x;
    let jw = min(j, p.N - 1u);
    var sums: GemvSums;
    var g = lid;
    for (; g + (QGEMV_UNROLL - 1u) * GEMV_WG < p.K / 8u; g += QGEMV_UNROLL * GEMV_WG) {
        var w: array<GemvWeights, QGEMV_UNROLL>;
        for (var u = 0u; u < QGEMV_UNROLL; u++) {
            let gu = g + u * GEMV_WG;
            w[u] = GemvWeights(qg_normed8(jw, gu, qg_norm8(gu)), array<vec4<f32>, 2>());
        }
        for (var u = 0u; u < QGEMV_UNROLL; u++) { gemv_add(&sums, g + u * GEMV_WG, w[u], 1u, true); }
    }
    for (; g < p.K / 8u; g += GEMV_WG) {
        gemv_add(&sums, g, GemvWeights(qg_normed8(jw, g, qg_norm8(g)), array<vec4<f32>, 2>()), 1u, true);
    }
    gemv_sum(lane, &sums, select(1u, 2u, NORMED));
    if (j < p.N && lid < p.M) {
        // (q, k and v of a few tokens in blocks: the stacked weights' parts apart)
        var idx = lid * p.N + j;
        if (p.c_block2 != 0u) {
            idx = block_index(lid, j, vec2<u32>(p.c_block2, p.c_block3), vec2<u32>(p.c_block2_at, p.c_block3_at), p.N);
        }
        var o = p.alpha * (gemv_row_sum(&sums, 0u, lid) * gemv_input_scale(gemv_row_sum(&sums, 1u, lid), p.K) + gemv_term(j, lid));
        if (p.beta != 0.0) {
            o += p.beta * out[idx];
        }
        out[idx] = o;
    }
}

// The gate and up projections of a gated MLP and its activation for at most 16 rows of inp,
// in one launch (decoding): W holds W_gate's N rows, then W_up's, and workgroup j decodes rows
// j and N + j as matmul_quant_gemv does (with its input norm, or a low-rank term over the
// stacked rows, where composed with one):
//   out(i, j) = act(inp(i)·W_gate(j)) · inp(i)·W_up(j),   act: silu, or gelu where GATE_GELU

@compute @workgroup_size(64)
fn matmul_quant_gemv_gated(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, lane: GemvLane) {
    let lid = lane.index;
    let j = wid.x + wid.y * nwg.x;
    let jw = min(j, p.N - 1u);
    var sums: GemvSums;
    var g = lid;
    for (; g + (QGEMV_UNROLL - 1u) * GEMV_WG < p.K / 8u; g += QGEMV_UNROLL * GEMV_WG) {
        var w: array<GemvWeights, QGEMV_UNROLL>;
        for (var u = 0u; u < QGEMV_UNROLL; u++) {
            let gu = g + u * GEMV_WG;
            let nw = qg_norm8(gu);
            w[u] = GemvWeights(qg_normed8(jw, gu, nw), qg_normed8(jw + p.N, gu, nw));
        }
        for (var u = 0u; u < QGEMV_UNROLL; u++) { gemv_add(&sums, g + u * GEMV_WG, w[u], 2u, true); }
    }
    for (; g < p.K / 8u; g += GEMV_WG) {
        let nw = qg_norm8(g);
        gemv_add(&sums, g, GemvWeights(qg_normed8(jw, g, nw), qg_normed8(jw + p.N, g, nw)), 2u, true);
    }
    gemv_sum(lane, &sums, select(2u, 3u, NORMED));
    if (j < p.N && lid < p.M) {
        // composed with a low-rank term (LoRA's h·Bᵀ of gate and of up): V's rows j and N + j
        let scale = gemv_input_scale(gemv_row_sum(&sums, 2u, lid), p.K);
        let gate = gemv_row_sum(&sums, 0u, lid) * scale + gemv_term(j, lid);
        out[lid * p.N + j] = gated(gate, gemv_row_sum(&sums, 1u, lid) * scale + gemv_term(j + p.N, lid), GATE_GELU);
    }
}
