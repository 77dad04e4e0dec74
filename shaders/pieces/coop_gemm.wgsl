// The GEMM on cooperative matrices (tensor cores) that matmul_coop.wgsl (a strided GEMM) and
// matmul/quant_coop.wgsl (x·Wᵀ and dy·W of a quantized W) run, for adapters that offer
// D × D × D products of f16 into f32 (D = 16 in pieces/coop_16x16.wgsl, 8 where core/build/
// swaps in pieces/coop_8x8.wgsl), on subgroups of any size:
//
//   c(i, j) = beta·c + alpha · (Σ_r A(i,r)·B(j,r) + term_scale · Σ_q H(i,q)·V(j,q))
//
// A and B are rounded to f16 as they are staged (clamped to ±65504, so an overflow saturates
// instead of becoming inf: pieces/tile_f16.wgsl's to_tile); the products are summed in f32.
// An input gradient's values fall below f16's range (6e-8), as mixed-precision training's
// loss scaling exists to avoid: there each row of A (the output gradient) and of the term's H
// is scaled by a power of two as it is staged, and its outputs by the inverse
// (pieces/row_scales.wgsl).
//
// A workgroup computes a TILE × TILE tile of c (64, or 128 for large outputs: the launcher's
// choice) in G × G blocks, G = 32 / D (2 × 2 for D = 16, 4 × 4 for D = 8), each by one
// subgroup as ACC × ACC cooperative D × D accumulators, ACC = TILE / 32 (2 or 4): block b is
// (b / G, b % G). The launcher sets WG to G² times the subgroup size it expects
// (GpuContext::coop_shape: the adapter's size, 128 for 16 × 16 on NVIDIA's 32 and for 8 × 8
// on lavapipe's 8; 32 where wgpu reports a range, as on AMD and Metal), so that subgroup s
// takes block s. Where the subgroups are wider than expected, there are fewer of them than
// blocks (S, which divides G²: both are powers of two), and subgroup s takes blocks s, s + S,
// ... in turns, each over the whole reduction. Where they are narrower, subgroup s computes
// block s mod G², as another does, and stores the same values: wasted work, but the
// cooperative operations may not stand in a branch that differs between subgroups (and a
// subgroup past the blocks cannot keep out of one). Per step, BK reduction steps of A (rows
// of the tile × r) and B (columns × r) are staged in workgroup memory, r contiguous. The
// accumulators go through workgroup memory on the way out, one of each block at a time
// (tile_c: G² · D² = 1024 values, 4 KB whatever the tile), so that alpha, beta and the bounds
// apply per element. A split reduction's part is z of the grid (r_split steps each); the
// low-rank term (LoRA's h·Bᵀ, or dh·A through its dropout mask), where the includer has one
// (pieces/low_rank_term.wgsl), is summed after the reduction by the first part, through the
// same tiles.
//
// The includer declares Params `p` (M, splits, r_split, term_r, term_scale, term_v_sr and the
// blocks pieces/column_blocks.wgsl reads) and defines its operands; `forward` is passed
// through to them (the quantized kernels' choice of product; the strided GEMM has one):
//   reduction_end(forward): the reduction's steps;  out_cols(forward): c's columns;
//   term_masked(): whether the term goes through the dropout mask alone (the product first);
//   a_offset(z): A's offset for z of the grid (passed on to stage_a and scale_rows);
//   stage_a(forward, a_off, i0, r0, r_end, flat): A(i0 + row, r0 + r) into f16 row · LD + r
//     of tile_a (put_tile, put_tile4), B's likewise (stage_b(forward, z, j0, ...):
//     B(j0 + col, r0 + r) into col · LD + r of tile_b), rounded by to_tile, zero past the
//     edges, A's rows scaled;
//   out_index(forward, z, i, j): where c(i, j) lies, for z of the grid (its dropout mask is
//     drawn at that index too); out_at(idx) and set_out(idx, v) read and write it there;
//   and what pieces/row_scales.wgsl's scale_rows reads.

// #include "coop_16x16.wgsl"
// #include "tile_f16.wgsl"
// #include "dropout_mask.wgsl"
// #include "held_values.wgsl"

// the tile's side (64 or 128), and the workgroup's invocations (G² subgroups)
override TILE: u32 = 64u;
override WG: u32 = 128u;
// Whether this kernel zeroes its workgroup memory before its work (where the launcher's
// context asks for wgpu's zeroing: Kernel::pipeline_options), every invocation a share. Its
// stages write every value it reads, so the zeroing is a safeguard; wgpu's own, one invocation
// storing each array whole, took RADV's compiler some 20 s per kernel. (Declared before ACC:
// naga 30 fails on an override declared after one that an expression initializes.)
override ZEROED: bool = false;
// Bench-only (ops::matmul::matmul_coop_probe; false in every product's kernel): the tiles
// staged in the first iteration only, every later one summing them again without barriers:
// the inner loop alone (cooperative loads from workgroup memory and products).
override SUMS_ONLY: bool = false;
// Whether the includer's stage_a and stage_b load each stage's values a stage ahead
// (matmul_coop.wgsl's PREFETCH: the launcher's variants "a stage ahead"); the quantized
// kernels' stage in turn whatever it says.
override PREFETCH: bool = false;
const BK: u32 = 32u;
// blocks per side of the tile
const G: u32 = 32u / D;
// accumulators per side of a block: 2 in tiles of 64, 4 in tiles of 128
override ACC: u32 = TILE / (G * D);
// Row stride of the staged tiles in f16s: BK plus 8 of padding (80 bytes, a multiple of the
// 16 bytes a cooperative load's rows must be aligned to), so that rows start on other banks.
const LD: u32 = 40u;
// (in the vec4s of the tiles below)
const LD4: u32 = LD / 4u;

// The staged tiles, in vec4s of f16: four consecutive steps of a line, which every staging
// stores at once (put_tile4; matmul_coop.wgsl's walk across the lines, and
// matmul/quant_coop.wgsl's input gradient's B, transpose four steps of four or eight lines
// to do so). The cooperative loads read them as f16s, their offset and stride in vec4s.
var<workgroup> tile_a: array<vec4<f16>, TILE * LD4>;
var<workgroup> tile_b: array<vec4<f16>, TILE * LD4>;
// one D × D accumulator of each block, row-major, block b's at b · D²
var<workgroup> tile_c: array<f32, G * G * D * D>;

// Four values at e .. e + 3 (e a multiple of 4, in f16s) of tile_a, or of tile_b where
// `on_b` (a constant where called).
fn put_tile4(on_b: bool, e: u32, v: vec4<f16>) {
    if (on_b) {
        tile_b[e / 4u] = v;
    } else {
        tile_a[e / 4u] = v;
    }
}

// Every workgroup array zeroed (ZEROED), by the workgroup's WG invocations.
fn zero_workgroup_memory(flat: u32) {
    for (var e = flat; e < TILE * LD4; e += WG) {
        tile_a[e] = vec4<f16>();
        tile_b[e] = vec4<f16>();
    }
    for (var e = flat; e < G * G * D * D; e += WG) {
        tile_c[e] = 0.0;
    }
    // (pieces/row_scales.wgsl's)
    for (var e = flat; e < SCALED_ROWS; e += WG) {
        atomicStore(&row_max_bits[e], 0u);
        row_scale[e] = 0.0;
    }
    workgroupBarrier();
}

// H(i0 + row, q0 + q) into tile_a and term_scale·V(j0 + col, q0 + q) into tile_b (zero past
// the term's rank and the output's edges; H's rows scaled as A's), four consecutive steps q
// of a line per store. Consecutive invocations take consecutive steps of a line, or of V's
// columns the same steps where V runs down them.
fn stage_term(i0: u32, j0: u32, q0: u32, q_end: u32, ncols: u32, flat: u32) {
    for (var e = flat; e < TILE * BK / 4u; e += WG) {
        let row = e / (BK / 4u);
        let q = 4u * (e % (BK / 4u));
        // (each value loaded from index 0 outside, then zeroed: a load under a branch would wait)
        let inside = vec4<bool>(i0 + row < p.M) & (vec4<u32>(q0 + q) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(q_end));
        let at = vec4<u32>(term_h_index(i0 + row, q0 + q), term_h_index(i0 + row, q0 + q + 1u), term_h_index(i0 + row, q0 + q + 2u), term_h_index(i0 + row, q0 + q + 3u));
        let ats = select(vec4<u32>(), at, inside);
        let v = vec4<f32>(term_h_at(ats.x), term_h_at(ats.y), term_h_at(ats.z), term_h_at(ats.w));
        put_tile4(false, row * LD + q, to_tile4(select(vec4<f32>(), v, inside) * row_scaled(row, 1.0)));
    }
    let along_q = p.term_v_sr == 1u;
    for (var e = flat; e < TILE * BK / 4u; e += WG) {
        let col = select(e % TILE, e / (BK / 4u), along_q);
        let q = 4u * select(e / TILE, e % (BK / 4u), along_q);
        let at = vec4<i32>(term_v_index(j0 + col, q0 + q), term_v_index(j0 + col, q0 + q + 1u), term_v_index(j0 + col, q0 + q + 2u), term_v_index(j0 + col, q0 + q + 3u));
        let inside = vec4<bool>(j0 + col < ncols) & (vec4<u32>(q0 + q) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(q_end)) & (at >= vec4<i32>());
        let ats = select(vec4<u32>(), vec4<u32>(at), inside);
        let v = vec4<f32>(term_v_at(ats.x), term_v_at(ats.y), term_v_at(ats.z), term_v_at(ats.w));
        put_tile4(true, col * LD + q, to_tile4(select(vec4<f32>(), p.term_scale * v, inside)));
    }
}

// Accumulator (a, b) of the blocks this turn computed, from tile_c into c: c(i, j) =
// alpha·v + beta·c within bounds, each row unscaled where the launch scales rows; or, for a
// masked term (`term`), c += alpha·dropout(v). An output's element is handled by the same
// invocation in both phases (a masked term reads what the first stored).
fn store_part(forward: bool, z: u32, i0: u32, j0: u32, first: u32, fresh: u32, a: u32, b: u32, flat: u32, term: bool) {
    let ncols = out_cols(forward);
    let side = TILE / G;
    for (var e = flat; e < fresh * D * D; e += WG) {
        let block = (first + e / (D * D)) % (G * G);
        let w = e % (D * D);
        let row = (block / G) * side + a * D + w / D;
        let col = (block % G) * side + b * D + w % D;
        let i = i0 + row;
        let j = j0 + col;
        if (i < p.M && j < ncols) {
            let idx = out_index(forward, z, i, j);
            let v = row_unscaled(row, p.alpha * tile_c[block * D * D + w]);
            if (term) {
                let keep = dropout_keep(vec4<u32>(idx), p.drop_seed, p.drop_p).x;
                set_out(idx, out_at(idx) + select(0.0, v / (1.0 - p.drop_p), keep));
                continue;
            }
            var o = v;
            if (p.beta != 0.0) {
                o += p.beta * out_at(idx);
            }
            set_out(idx, o);
        }
    }
}

// Where a turn's accumulators go (store_acc): the product (`forward`), z of the grid, the
// tile's corner, the subgroup's block, the first block the turn computed and how many, the
// invocation, and whether it is the masked term's phase.
struct CoopOut {
    forward: bool,
    z: u32,
    i0: u32,
    j0: u32,
    block: u32,
    first: u32,
    fresh: u32,
    flat: u32,
    term: bool,
}

// Accumulator (a, b) of every block the turn computed into c, through tile_c (store_part).
fn store_acc(o: CoopOut, acc: CoopC, a: u32, b: u32) {
    coopStoreT(acc, &tile_c[o.block * D * D], D);
    workgroupBarrier();
    store_part(o.forward, o.z, o.i0, o.j0, o.first, o.fresh, a, b, o.flat, o.term);
    workgroupBarrier();
}

// The workgroup's TILE × TILE tile of c (wid.x its columns, wid.y its rows, wid.z a batch item
// or a split reduction's part), `sg` its subgroup of `subgroups`.
fn coop_gemm(wid: vec3<u32>, flat: u32, sg: u32, subgroups: u32, forward: bool) {
    if (ZEROED) {
        zero_workgroup_memory(flat);
    }
    let i0 = wid.y * TILE;
    let j0 = wid.x * TILE;
    let a_off = a_offset(wid.z);
    var r_begin = 0u;
    var r_end = reduction_end(forward);
    if (p.splits > 1u) {
        r_begin = wid.z * p.r_split;
        r_end = min(r_end, r_begin + p.r_split);
    }
    // the reduction's part, then the low-rank term's steps (by the first part)
    let segments = select(1u, 2u, LOW_RANK && wid.z == 0u);
    // Dropout on the term alone (LoRA's on dx): two phases, the product's stored first, then
    // the term, summed afresh, added through the mask.
    let phases = select(1u, 2u, segments == 2u && term_masked());
    let passes = (G * G + subgroups - 1u) / subgroups;
    // blocks computed per turn (all of them where subgroups are narrower than expected)
    let fresh = min(subgroups, G * G);
    scale_rows(segments == 2u, a_off, i0, r_begin, r_end, flat);
    for (var phase = 0u; phase < phases; phase++) {
        for (var turn = 0u; turn < passes; turn++) {
            let block = (turn * subgroups + sg) % (G * G);
            let qi = (block / G) * ACC * D;
            let qj = (block % G) * ACC * D;
            // Accumulator (a, b) is c{a}{b}: named, not an array that loops index, which a
            // driver that does not unroll those loops keeps in memory. The ones past 2 × 2 are
            // used only where ACC is 4 (a branch on an override: gone from the pipeline).
            var c00 = CoopC(); var c01 = CoopC(); var c02 = CoopC(); var c03 = CoopC();
            var c10 = CoopC(); var c11 = CoopC(); var c12 = CoopC(); var c13 = CoopC();
            var c20 = CoopC(); var c21 = CoopC(); var c22 = CoopC(); var c23 = CoopC();
            var c30 = CoopC(); var c31 = CoopC(); var c32 = CoopC(); var c33 = CoopC();
            for (var s = 0u; s < segments; s++) {
                if (phases == 2u && s != phase) {
                    continue;
                }
                let term = s == 1u;
                let lo = select(r_begin, 0u, term);
                let hi = select(r_end, p.term_r, term);
                for (var r0 = lo; r0 < hi; r0 += BK) {
                    let staged = !SUMS_ONLY || r0 == lo;
                    if (term) {
                        stage_term(i0, j0, r0, hi, out_cols(forward), flat);
                    } else if (staged) {
                        stage_a(forward, a_off, i0, r0, hi, flat);
                        stage_b(forward, wid.z, j0, r0, hi, flat);
                    }
                    if (staged) {
                        workgroupBarrier();
                    }
                    for (var kk = 0u; kk < BK; kk += D) {
                        // the block's rows qi + a·D.. of A and columns qj + b·D.. of B (in
                        // vec4s: kk is a multiple of 8)
                        let at_a = qi * LD4 + kk / 4u;
                        let at_b = qj * LD4 + kk / 4u;
                        let fa0 = coopLoadT<CoopA>(&tile_a[at_a], LD4);
                        let fa1 = coopLoadT<CoopA>(&tile_a[at_a + D * LD4], LD4);
                        let fb0 = coopLoad<CoopB>(&tile_b[at_b], LD4);
                        let fb1 = coopLoad<CoopB>(&tile_b[at_b + D * LD4], LD4);
                        c00 = coopMultiplyAdd(fa0, fb0, c00);
                        c01 = coopMultiplyAdd(fa0, fb1, c01);
                        c10 = coopMultiplyAdd(fa1, fb0, c10);
                        c11 = coopMultiplyAdd(fa1, fb1, c11);
                        if (ACC == 4u) {
                            let fa2 = coopLoadT<CoopA>(&tile_a[at_a + 2u * D * LD4], LD4);
                            let fa3 = coopLoadT<CoopA>(&tile_a[at_a + 3u * D * LD4], LD4);
                            let fb2 = coopLoad<CoopB>(&tile_b[at_b + 2u * D * LD4], LD4);
                            let fb3 = coopLoad<CoopB>(&tile_b[at_b + 3u * D * LD4], LD4);
                            c02 = coopMultiplyAdd(fa0, fb2, c02);
                            c03 = coopMultiplyAdd(fa0, fb3, c03);
                            c12 = coopMultiplyAdd(fa1, fb2, c12);
                            c13 = coopMultiplyAdd(fa1, fb3, c13);
                            c20 = coopMultiplyAdd(fa2, fb0, c20);
                            c21 = coopMultiplyAdd(fa2, fb1, c21);
                            c22 = coopMultiplyAdd(fa2, fb2, c22);
                            c23 = coopMultiplyAdd(fa2, fb3, c23);
                            c30 = coopMultiplyAdd(fa3, fb0, c30);
                            c31 = coopMultiplyAdd(fa3, fb1, c31);
                            c32 = coopMultiplyAdd(fa3, fb2, c32);
                            c33 = coopMultiplyAdd(fa3, fb3, c33);
                        }
                    }
                    if (staged) {
                        workgroupBarrier();
                    }
                }
            }
            let out = CoopOut(forward, wid.z, i0, j0, block, turn * subgroups, fresh, flat, phase == 1u);
            store_acc(out, c00, 0u, 0u);
            store_acc(out, c01, 0u, 1u);
            store_acc(out, c10, 1u, 0u);
            store_acc(out, c11, 1u, 1u);
            if (ACC == 4u) {
                store_acc(out, c02, 0u, 2u);
                store_acc(out, c03, 0u, 3u);
                store_acc(out, c12, 1u, 2u);
                store_acc(out, c13, 1u, 3u);
                store_acc(out, c20, 2u, 0u);
                store_acc(out, c21, 2u, 1u);
                store_acc(out, c22, 2u, 2u);
                store_acc(out, c23, 2u, 3u);
                store_acc(out, c30, 3u, 0u);
                store_acc(out, c31, 3u, 1u);
                store_acc(out, c32, 3u, 2u);
                store_acc(out, c33, 3u, 3u);
            }
        }
    }
}
