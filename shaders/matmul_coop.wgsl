enable f16;
enable wgpu_cooperative_matrix;

// matmul_tiled.wgsl's strided GEMM on cooperative matrices (tensor cores), for adapters that
// offer D × D × D products of f16 into f32 (D = 16 here, 8 in the composition
// matmul_coop_8x8.wgsl) and subgroups of one size (8 to 64 invocations):
//
//   c[z](M,N) = beta·c[z] + alpha · Σ_r A(i,r)·B(j,r)      (strides as matmul_tiled.wgsl's)
//
// A and B are rounded to f16 as they are staged (clamped to ±65504, so an overflow saturates
// instead of becoming inf); the products are summed in f32. The launcher uses it for forwards
// and input gradients. An input gradient's values fall below f16's range (6e-8), as
// mixed-precision training's loss scaling exists to avoid: there each row of A (the output
// gradient) and of the term's H is scaled by a power of two as it is staged, and its outputs by
// the inverse (pieces/row_scales.wgsl); A and H may lie in column blocks (a stacked weight's
// parts' gradients: pieces/column_blocks.wgsl).
//
// A workgroup computes a 64 × 64 tile of c in G × G blocks of 2D × 2D, G = 64 / 2D (2 × 2
// blocks of 32 × 32 for D = 16, 4 × 4 of 16 × 16 for D = 8): one subgroup per block, s the
// block (s / G, s % G), as 2 × 2 cooperative D × D accumulators. The launcher sets WG to G²
// times the adapter's subgroup size (128 for 16 × 16 on NVIDIA's 32; 128 for 8 × 8 on
// lavapipe's 8). Per step, BK
// reduction steps of A (rows of the tile × r) and B (columns × r) are staged in workgroup
// memory, r contiguous, which is row-major for A (M × K) and column-major for B (K × N). The
// accumulators go through workgroup memory on the way out, so that alpha, beta and the
// bounds apply per element. Split reductions and batches as in matmul_tiled.wgsl (the launcher shares them),
// and so is the low-rank term (LoRA's h·Bᵀ, or dh·A with its dropout mask) of the composition
// matmul_coop_low_rank.wgsl, summed after the reduction through the same tiles.

// #include "pieces/strided_gemm.wgsl"
// #include "pieces/gemm_output.wgsl"
// #include "pieces/column_blocks.wgsl"
// #include "pieces/row_scales.wgsl"
// #include "pieces/dropout_mask.wgsl"
// #include "pieces/coop_16x16.wgsl"

const DROP_TERM: u32 = 4u; // as matmul_tiled.wgsl's: the mask on the term's product alone

const TILE: u32 = 64u;
const BK: u32 = 32u;
// blocks per side of the tile, and the workgroup's invocations (G² subgroups)
const G: u32 = TILE / (2u * D);
override WG: u32 = 128u;
// Row stride of the staged tiles in f16s: BK plus 8 of padding (80 bytes, a multiple of the
// 16 bytes a cooperative load's rows must be aligned to), so that rows start on other banks.
const LD: u32 = 40u;
const F16_MAX: f32 = 65504.0;

var<workgroup> tile_a: array<f16, TILE * LD>;
var<workgroup> tile_b: array<f16, TILE * LD>;
var<workgroup> tile_c: array<f32, TILE * TILE>;

// A(i, r), in blocks along r where a_block2 says so (an input gradient's), or H(i, r) where
// `term`.
fn a_value(term: bool, a_off: u32, i: u32, r: u32) -> f32 {
    if (term) {
        return term_h_at(term_h_index(i, r));
    }
    if (p.a_block2 != 0u) {
        return a[block_index(i, r, vec2<u32>(p.a_block2, p.a_block3), vec2<u32>(p.a_block2_at, p.a_block3_at), p.R)];
    }
    return a[a_off + i * p.a_si + r * p.a_sr];
}

// Stages A(i0.., r0..) into tile_a[row · LD + r] (zero past the edges), or H's where
// `term`, each row scaled where the launch scales rows. Consecutive invocations take
// consecutive addresses of `a`: along r when r is its contiguous index, else along the rows.
fn stage_a(term: bool, a_off: u32, i0: u32, r0: u32, r_end: u32, flat: u32) {
    let along_r = term || p.a_sr == 1u;
    for (var e = flat; e < TILE * BK; e += WG) {
        let row = select(e % TILE, e / BK, along_r);
        let r = select(e / TILE, e % BK, along_r);
        var v = 0.0;
        if (i0 + row < p.M && r0 + r < r_end) {
            v = row_scaled(row, a_value(term, a_off, i0 + row, r0 + r));
        }
        tile_a[row * LD + r] = f16(clamp(v, -F16_MAX, F16_MAX));
    }
}

// What pieces/row_scales.wgsl's scale_rows reads.
fn staged_rows() -> u32 { return TILE; }
fn staged_invocations() -> u32 { return WG; }
fn staged_along_r(term: bool) -> bool { return term || p.a_sr == 1u; }
fn staged_value(term: bool, a_off: u32, i: u32, r: u32) -> f32 { return a_value(term, a_off, i, r); }

// B's, or term_scale·V's where `term`.
fn stage_b(term: bool, b_off: u32, j0: u32, r0: u32, r_end: u32, flat: u32) {
    let along_r = select(p.b_sr, p.term_v_sr, term) == 1u;
    for (var e = flat; e < TILE * BK; e += WG) {
        let col = select(e % TILE, e / BK, along_r);
        let r = select(e / TILE, e % BK, along_r);
        var v = 0.0;
        if (j0 + col < p.N && r0 + r < r_end) {
            if (term) {
                let at = term_v_index(j0 + col, r0 + r);
                if (at >= 0) {
                    v = p.term_scale * term_v_at(u32(at));
                }
            } else {
                v = b[b_off + (j0 + col) * p.b_sj + (r0 + r) * p.b_sr];
            }
        }
        tile_b[col * LD + r] = f16(clamp(v, -F16_MAX, F16_MAX));
    }
}

// c = alpha·tile_c + beta·c over this workgroup's tile within bounds, each row unscaled where
// the launch scales rows; or, for a masked term (`term`), c += alpha·dropout(tile_c).
fn store_tile(z: u32, i0: u32, j0: u32, flat: u32, term: bool) {
    for (var e = flat; e < TILE * TILE; e += WG) {
        let i = i0 + e / TILE;
        let j = j0 + e % TILE;
        if (i < p.M && j < p.N) {
            let idx = z * p.c_batch + i * p.N + j;
            let v = row_unscaled(e / TILE, p.alpha * tile_c[e]);
            if (term) {
                let keep = dropout_keep(vec4<u32>(idx), p.drop_seed, p.drop_p).x;
                c[idx] += select(0.0, v / (1.0 - p.drop_p), keep);
                continue;
            }
            var out = v;
            if (p.beta != 0.0) {
                out += p.beta * c[idx];
            }
            c[idx] = out;
        }
    }
}

@compute @workgroup_size(WG)
fn matmul_coop(@builtin(workgroup_id) wid: vec3<u32>,
               @builtin(local_invocation_index) flat: u32,
               @builtin(subgroup_id) sg: u32) {
    let i0 = wid.y * TILE;
    let j0 = wid.x * TILE;
    let a_off = wid.z * p.a_batch;
    let b_off = wid.z * p.b_batch;
    let qi = (sg / G) * 2u * D;
    let qj = (sg % G) * 2u * D;
    var c00 = CoopC();
    var c01 = CoopC();
    var c10 = CoopC();
    var c11 = CoopC();
    var r_begin = 0u;
    var r_end = p.R;
    if (p.splits > 1u) {
        r_begin = wid.z * p.r_split;
        r_end = min(p.R, r_begin + p.r_split);
    }
    // the reduction's part, then the low-rank term's steps (by the first part)
    let segments = select(1u, 2u, LOW_RANK && wid.z == 0u);
    // Dropout on the term alone (LoRA's on dx): the product is stored first, and the term,
    // summed afresh, added through the mask.
    let masked_term = segments == 2u && p.drop_on == DROP_TERM;
    scale_rows(segments == 2u, a_off, i0, r_begin, r_end, flat);
    for (var s = 0u; s < segments; s++) {
        let term = s == 1u;
        if (term && masked_term) {
            coopStoreT(c00, &tile_c[qi * TILE + qj], TILE);
            coopStoreT(c01, &tile_c[qi * TILE + qj + D], TILE);
            coopStoreT(c10, &tile_c[(qi + D) * TILE + qj], TILE);
            coopStoreT(c11, &tile_c[(qi + D) * TILE + qj + D], TILE);
            workgroupBarrier();
            store_tile(wid.z, i0, j0, flat, false);
            workgroupBarrier();
            c00 = CoopC();
            c01 = CoopC();
            c10 = CoopC();
            c11 = CoopC();
        }
        let lo = select(r_begin, 0u, term);
        let hi = select(r_end, p.term_r, term);
        for (var r0 = lo; r0 < hi; r0 += BK) {
            stage_a(term, a_off, i0, r0, hi, flat);
            stage_b(term, b_off, j0, r0, hi, flat);
            workgroupBarrier();
            for (var kk = 0u; kk < BK; kk += D) {
                let a0 = coopLoadT<CoopA>(&tile_a[qi * LD + kk], LD);
                let a1 = coopLoadT<CoopA>(&tile_a[(qi + D) * LD + kk], LD);
                let b0 = coopLoad<CoopB>(&tile_b[qj * LD + kk], LD);
                let b1 = coopLoad<CoopB>(&tile_b[(qj + D) * LD + kk], LD);
                c00 = coopMultiplyAdd(a0, b0, c00);
                c01 = coopMultiplyAdd(a0, b1, c01);
                c10 = coopMultiplyAdd(a1, b0, c10);
                c11 = coopMultiplyAdd(a1, b1, c11);
            }
            workgroupBarrier();
        }
    }
    coopStoreT(c00, &tile_c[qi * TILE + qj], TILE);
    coopStoreT(c01, &tile_c[qi * TILE + qj + D], TILE);
    coopStoreT(c10, &tile_c[(qi + D) * TILE + qj], TILE);
    coopStoreT(c11, &tile_c[(qi + D) * TILE + qj + D], TILE);
    workgroupBarrier();
    store_tile(wid.z, i0, j0, flat, masked_term);
}
