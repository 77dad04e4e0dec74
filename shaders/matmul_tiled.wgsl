// A strided f32 GEMM with workgroup-memory tiles: the matmul of real GPUs (and of any shape
// the register-blocked matmul.wgsl does not take):
//
//   c[z](M,N) = beta·c[z] + alpha · Σ_r A(i,r)·B(j,r)
//   A(i,r) = a[z·a_batch + i·a_si + r·a_sr],  B(j,r) = b[z·b_batch + j·b_sj + r·b_sr]
//
// The launcher expresses y = x·Wᵀ, dx = dy·W and dW = dyᵀ·x through the strides.
// Composed again with pieces/gemm_output_low_rank.wgsl as matmul_tiled_low_rank.wgsl, the
// kernel also adds a low-rank term (pieces/strided_gemm.wgsl) after the reduction, through
// the same tiles: LoRA's scale·h·Bᵀ in the base forward and dh·A in its input gradient,
// without a launch of their own.
// A workgroup of TX × TY invocations computes a (8·TY) × (4·CQ·TX) tile of c; each invocation
// an 8 × 4·CQ block of it, as two 4-row by CQ 4-column quarters spread over the tile (so that
// neighbouring invocations read neighbouring words of the staged tiles and write
// neighbouring words of c), each 32 invocations on 8 × 4 places of the grid, their lanes paired
// on the words they read (block_place). Per step, BK reduction steps of A and B are staged in
// workgroup memory, reduction-major, so that the inner loop reads vec4s of rows and columns;
// each invocation loads its values of the next step into registers before it sums the
// current one (PREFETCH), so that the loads' latency hides behind the sums (one tile in
// workgroup memory, where a second one would pass WebGPU's 16 KB).
// The launcher sets TX and TY (ops/matmul/tiling.rs: 8 × 8 for small outputs, 16 × 16 for
// large), and CQ (2; 1 in tiles of 128 × 64 where the context says so, and in tiles of 64 × 32
// for outputs of at most 32 columns: LoRA's products of its rank).
//
// Split reduction: an output of few tiles over a long reduction (LoRA's weight gradients:
// r × in over all the tokens) would leave most of a GPU idle, so the launcher may split the
// reduction into `splits` ranges of `r_split` steps, one per z, each writing its partial
// product (alpha 1, beta 0) to its own M × N slice of a scratch (c_split apart);
// matmul_sum_splits then forms c = beta·c + alpha·Σ partials. z counts the batch's items,
// each split alike, a part holding every item's (LoRA's x·Aᵀ and dh of several targets,
// summed into each item's place; their dB's, as parts summed later with other gradients').
//
// Column blocks (pieces/column_blocks.wgsl): A, and a term's H, may each be up to three
// row-major matrices stored apart, one after another along r (a stacked weight's input
// gradient from its parts' output gradients, and their LoRA terms, in one launch); so may c
// along its columns (a stacked weight's forward into its parts' outputs, each part's LoRA
// term its own: V block-diagonal). A weight gradient's a, read transposed, may lie in blocks
// along the output's rows (the dA of LoRA's targets that share an input, from each one's dh).

// #include "pieces/strided_gemm.wgsl"
// #include "pieces/gemm_output.wgsl"
// #include "pieces/tile_f32.wgsl"
// #include "pieces/gated_activations.wgsl"
// #include "pieces/input_norm_none.wgsl"
// #include "pieces/column_blocks.wgsl"
// #include "pieces/block_fma.wgsl"
// #include "pieces/block_place.wgsl"
// #include "pieces/held_values.wgsl"

const DROP_A: u32 = 1u;
const DROP_B: u32 = 2u;
const DROP_OUT: u32 = 3u;
const DROP_TERM: u32 = 4u; // the low-rank term's product alone (LoRA's part of dx)

// #include "pieces/dropout_mask.wgsl"

// v·keep/(1 − p) at flat index `idx` of the masked buffer, when `on` is the masked operand.
fn drop_at(on: u32, idx: u32, v: f32) -> f32 {
    if (p.drop_on != on) {
        return v;
    }
    return select(0.0, v / (1.0 - p.drop_p), dropout_keep(vec4<u32>(idx), p.drop_seed, p.drop_p).x);
}

override TX: u32 = 8u; // invocations along N
override TY: u32 = 8u; // invocations along M
// Each step's values loaded during the previous step's sums (the default), or just before
// they are staged (the launcher's variants "loaded in turn", HEARTH_TILE_PREFETCH=0: to
// compare on a GPU).
override PREFETCH: bool = true;
// Reduction steps staged per iteration: 8, or 16 in tiles of 128 where the launcher says so
// (half the barriers; twice the workgroup memory, past WebGPU's 16 KB in f32). The staging
// below holds (8·T)·BK / (TX·TY) values per invocation, at most 8 (Staged): 16 steps in
// tiles of 64 would take 16.
override BK: u32 = 8u;
// The 4-column quarters of each invocation's block: 2 (8 × 8, tiles as wide as tall), or 1
// (8 × 4: tiles of 128 rows by 64 columns where the launcher says so; 64 by 32 for thin
// outputs, whose 64 × 64 tiles summed three quarters past them). Half the accumulators:
// where a GPU's compiler gives the 8 × 8 blocks more registers than leave room for a second
// workgroup on a multiprocessor, the 8 × 4 blocks may hold two or three, whose loads and
// barriers then overlap each other's sums.
override CQ: u32 = 2u;
// Bench-only probes (ops::matmul's TileProbe; 0 in every product's kernel). 1 loads from
// memory in the first iteration only and writes the values it holds to the tiles in every
// later one; 2 writes the tiles in the first iteration only, every later one summing them
// again without its writes and barriers. Either sums the first BK steps' product once per
// iteration, so that a GPU's times tell the loads' share (1 against 0) and the staging's (2
// against 1) apart from the sums'.
override PROBE: u32 = 0u;
// Bench-only (TileProbe::SumsOnlyRowMajor; false in every product's kernel): the invocations
// on their grid of blocks in row-major order, not paired on the words they read (block_place).
override ROW_LANES: bool = false;
// The tiles in workgroup memory: 1, or 2 in tiles of 128 where the launcher says so (twice the
// workgroup memory, past WebGPU's 16 KB). With two, each iteration writes the one the last
// iteration did not read, so that one barrier per iteration suffices (after the writes): an
// invocation done with its sums goes on to the next iteration's loads and writes while others
// still sum.
override BUFFERS: u32 = 1u;
// The tiles an iteration writes and sums: 0, or alternately 0 and 1 where BUFFERS is 2.
var<private> tile_buffer: u32;

// Tiles in vec4s: BK rows of A's 8·TY/4 = 2·TY vec4s and of B's 4·CQ·TX/4 = CQ·TX, each with
// one vec4 of padding so that the transposing stores of a row-major operand spread over the
// banks. Their elements are
// f32, or f16 in matmul_tiled_f16.wgsl (pieces/tile_f16.wgsl: the inputs rounded to f16 as
// they are staged, for forwards and input gradients where the context asks for f16, the
// gradients' rows scaled by pieces/row_scales.wgsl).
var<workgroup> tile_a: array<vec4<TileElem>, BUFFERS * BK * (2u * TY + 1u)>;
var<workgroup> tile_b: array<vec4<TileElem>, BUFFERS * BK * (CQ * TX + 1u)>;

// Where A(i, rr) lies in `a`: past `a_off` by its strides, or in its column blocks.
fn a_index(a_off: u32, i: u32, rr: u32) -> u32 {
    if (p.a_block2 == 0u) {
        return a_off + i * p.a_si + rr * p.a_sr;
    }
    let starts = vec2<u32>(p.a_block2, p.a_block3);
    let offsets = vec2<u32>(p.a_block2_at, p.a_block3_at);
    // an input gradient's a: blocks along the reduction; a weight gradient's (aᵀ read):
    // along the output's rows
    return select(block_index(i, rr, starts, offsets, p.R), block_index(rr, i, starts, offsets, p.M), p.a_blocks_on_rows != 0u);
}

// A(i, rr) (dropout applied where it masks A), or H(i, rr) where `term`.
fn a_value(term: bool, a_off: u32, i: u32, rr: u32) -> f32 {
    if (term) {
        return term_h_at(term_h_index(i, rr));
    }
    let idx = a_index(a_off, i, rr);
    return drop_at(DROP_A, idx, a[idx]);
}

// An invocation's walk through a stage of `lines` rows of A (or columns of B) by BK steps:
// its elements e = flat + k·TX·TY, consecutive invocations at consecutive addresses (along r
// where r is the operand's contiguous index, else along the lines). Such an e keeps its step
// r and walks its line by TX·TY/BK where the operand runs along r, else keeps its line and
// walks r by TX·TY/lines: its address and its place in the tile each advance by a constant,
// so the staging (whose index arithmetic a GPU issues in the FMAs' slots) computes them once.
struct StageWalk {
    line: u32,
    r: u32,
    d_line: u32,
    d_r: u32,
}

fn stage_walk(flat: u32, lines: u32, along_r: bool) -> StageWalk {
    return StageWalk(select(flat % lines, flat / BK, along_r), select(flat / lines, flat % BK, along_r),
                     select(0u, TX * TY / BK, along_r), select(TX * TY / lines, 0u, along_r));
}

// (line, r) of the walk's k-th element.
fn walk_at(w: StageWalk, k: u32) -> vec2<u32> {
    return vec2<u32>(w.line + k * w.d_line, w.r + k * w.d_r);
}

// The values an invocation stages of one operand per iteration (load_a, load_b), written to
// the tiles by put_a and put_b: (8·T)·BK / (TX·TY) of them (B's 4·CQ·TX·BK / (TX·TY)), 8 in a
// workgroup of 8 × 8 and 4 in one of 16 × 16 (B's 2 where CQ is 1). Loaded a step ahead
// (PREFETCH), before the previous iteration's sums so that their latency hides behind them;
// else just before they are written.
// Each value is loaded whether or not it lies inside the product (from index 0 where it does
// not; put_a and put_b zero it), and nothing is done to it in between: a load under a branch
// waits for the branch, so the walk's loads would reach memory one round trip at a time
// instead of all in flight together.
// They are held in two vec4s and loaded by eight calls written out, not in an array filled by
// a loop: a compiler that does not unroll such a loop keeps the array in memory, and each
// load then waits for the one before it to be stored (so do arrays copied whole, as a
// function's argument or result). The second vec4 is loaded only where 8 are staged.
struct Staged {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

// How many of A's and of B's values an invocation stages per iteration (4 or 8).
fn a_staged() -> u32 { return 8u * TY * BK / (TX * TY); }
fn b_staged() -> u32 { return 4u * CQ * TX * BK / (TX * TY); }

// The columns of a tile (B's lines).
fn tile_columns() -> u32 { return 4u * CQ * TX; }

// The k-th value of an invocation's walk through A (H where `term`) from rows i0.., steps
// r0..: from a's address `at` + k·d_at, or where A is in `blocks` from a_index; 0's index
// past r_end or M. (`term` and `blocks` are constants where gather_a is called: the branches
// go with the inlining, and the plain walk computes no block index.)
fn a_walk_value(term: bool, blocks: bool, a_off: u32, i0: u32, r0: u32, r_end: u32, w: StageWalk, at: u32, d_at: u32, k: u32) -> f32 {
    let e = vec2<u32>(i0, r0) + walk_at(w, k);
    let inside = (e.x < p.M) & (e.y < r_end);
    if (term) {
        return term_h_at(select(0u, term_h_index(e.x, e.y), inside));
    }
    if (blocks) {
        return a[select(0u, a_index(a_off, e.x, e.y), inside)];
    }
    return a[select(0u, at + k * d_at, inside)];
}

// A's values of rows i0.. and steps r0.. along stage_walk's walk (or H's where `term`); those
// past r_end or M are put_a's to zero. Consecutive invocations take consecutive addresses of
// `a`: along r when r is its contiguous index, else along the rows.
fn load_a(term: bool, a_off: u32, i0: u32, r0: u32, r_end: u32, flat: u32) -> Staged {
    // (decided once, not at each load: each gather's `term` and `blocks` are constants)
    if (term) {
        return gather_a(true, false, a_off, i0, r0, r_end, flat);
    }
    if (p.a_block2 != 0u) {
        return gather_a(false, true, a_off, i0, r0, r_end, flat);
    }
    return gather_a(false, false, a_off, i0, r0, r_end, flat);
}

fn gather_a(term: bool, blocks: bool, a_off: u32, i0: u32, r0: u32, r_end: u32, flat: u32) -> Staged {
    let w = stage_walk(flat, 8u * TY, staged_along_r(term));
    // (a's address steps with the walk)
    let at = a_off + (i0 + w.line) * p.a_si + (r0 + w.r) * p.a_sr;
    let d_at = w.d_line * p.a_si + w.d_r * p.a_sr;
    var s: Staged;
    s.lo = vec4<f32>(a_walk_value(term, blocks, a_off, i0, r0, r_end, w, at, d_at, 0u), a_walk_value(term, blocks, a_off, i0, r0, r_end, w, at, d_at, 1u),
                     a_walk_value(term, blocks, a_off, i0, r0, r_end, w, at, d_at, 2u), a_walk_value(term, blocks, a_off, i0, r0, r_end, w, at, d_at, 3u));
    if (a_staged() > 4u) {
        s.hi = vec4<f32>(a_walk_value(term, blocks, a_off, i0, r0, r_end, w, at, d_at, 4u), a_walk_value(term, blocks, a_off, i0, r0, r_end, w, at, d_at, 5u),
                         a_walk_value(term, blocks, a_off, i0, r0, r_end, w, at, d_at, 6u), a_walk_value(term, blocks, a_off, i0, r0, r_end, w, at, d_at, 7u));
    }
    return s;
}

// load_a's values into tile_a: zero past r_end and M, dropout applied where it masks A, each
// row scaled where the launch scales rows.
fn put_a(term: bool, a_off: u32, i0: u32, r0: u32, r_end: u32, flat: u32, staged: Staged) {
    let rows = 8u * TY;
    let w = stage_walk(flat, rows, staged_along_r(term));
    for (var k = 0u; k < a_staged(); k++) {
        let place = walk_at(w, k);
        let row = place.x;
        let r = place.y;
        var v = select(0.0, one_of_eight(staged.lo, staged.hi, k), (i0 + row < p.M) & (r0 + r < r_end));
        if (!term && p.drop_on == DROP_A) {
            v = drop_at(DROP_A, a_index(a_off, i0 + row, r0 + r), v);
        }
        put_value(false, rows, row, r, row_scaled(row, v));
    }
}

// What pieces/row_scales.wgsl's scale_rows reads (f16 tiles).
fn staged_rows() -> u32 { return 8u * TY; }
fn staged_invocations() -> u32 { return TX * TY; }
fn staged_along_r(term: bool) -> bool { return term || p.a_sr == 1u; }
fn staged_value(term: bool, a_off: u32, i: u32, r: u32) -> f32 { return a_value(term, a_off, i, r); }

// Whether consecutive invocations stage B (or V where `term`) along r.
fn b_along_r(term: bool) -> bool { return select(p.b_sr, p.term_v_sr, term) == 1u; }

// The k-th value of an invocation's walk through B (V where `term`) from columns j0.., steps
// r0..: from b's address `at` + k·d_at; 0's index past r_end or N, and V's off its blocks.
fn b_walk_value(term: bool, j0: u32, r0: u32, r_end: u32, w: StageWalk, at: u32, d_at: u32, k: u32) -> f32 {
    let e = vec2<u32>(j0, r0) + walk_at(w, k);
    let inside = (e.x < p.N) & (e.y < r_end);
    if (term) {
        let at_v = term_v_index(e.x, e.y);
        return term_v_at(select(0u, u32(at_v), inside & (at_v >= 0)));
    }
    return b[select(0u, at + k * d_at, inside)];
}

// B's values of columns j0.. and steps r0.. along stage_walk's walk (or V's where `term`);
// those past r_end or N, and V's off its blocks, are put_b's to zero.
fn load_b(term: bool, b_off: u32, j0: u32, r0: u32, r_end: u32, flat: u32) -> Staged {
    if (term) {
        return gather_b(true, b_off, j0, r0, r_end, flat);
    }
    return gather_b(false, b_off, j0, r0, r_end, flat);
}

fn gather_b(term: bool, b_off: u32, j0: u32, r0: u32, r_end: u32, flat: u32) -> Staged {
    let w = stage_walk(flat, tile_columns(), b_along_r(term));
    let at = b_off + (j0 + w.line) * p.b_sj + (r0 + w.r) * p.b_sr;
    let d_at = w.d_line * p.b_sj + w.d_r * p.b_sr;
    var s: Staged;
    // (2 values where the tiles are 64 columns wide and 8 steps deep)
    s.lo = vec4<f32>(b_walk_value(term, j0, r0, r_end, w, at, d_at, 0u), b_walk_value(term, j0, r0, r_end, w, at, d_at, 1u), 0.0, 0.0);
    if (b_staged() > 2u) {
        s.lo.z = b_walk_value(term, j0, r0, r_end, w, at, d_at, 2u);
        s.lo.w = b_walk_value(term, j0, r0, r_end, w, at, d_at, 3u);
    }
    if (b_staged() > 4u) {
        s.hi = vec4<f32>(b_walk_value(term, j0, r0, r_end, w, at, d_at, 4u), b_walk_value(term, j0, r0, r_end, w, at, d_at, 5u),
                         b_walk_value(term, j0, r0, r_end, w, at, d_at, 6u), b_walk_value(term, j0, r0, r_end, w, at, d_at, 7u));
    }
    return s;
}

// load_b's values into tile_b: zero past r_end and N (and V's off its blocks), dropout
// applied where it masks B, V's times term_scale.
fn put_b(term: bool, b_off: u32, j0: u32, r0: u32, r_end: u32, flat: u32, staged: Staged) {
    let cols = tile_columns();
    let w = stage_walk(flat, cols, b_along_r(term));
    for (var k = 0u; k < b_staged(); k++) {
        let place = walk_at(w, k);
        let col = place.x;
        let r = place.y;
        let j = j0 + col;
        let rr = r0 + r;
        var inside = (j < p.N) & (rr < r_end);
        var v = one_of_eight(staged.lo, staged.hi, k);
        if (term) {
            inside = inside & (term_v_index(j, rr) >= 0);
            v *= p.term_scale;
        } else if (p.drop_on == DROP_B) {
            v = drop_at(DROP_B, b_off + j * p.b_sj + rr * p.b_sr, v);
        }
        put_value(true, cols, col, r, select(0.0, v, inside));
    }
}

// v into tile_a[r][line], or tile_b[r][line] (`on_b`), of `lines` rows (columns), in the
// iteration's `tile_buffer`.
fn put_value(on_b: bool, lines: u32, line: u32, r: u32, v: f32) {
    // (a tile's rows: lines / 4 vec4s and one of padding)
    let at = (tile_buffer * BK + r) * (lines / 4u + 1u) + line / 4u;
    if (on_b) {
        tile_b[at][line % 4u] = to_tile(v);
    } else {
        tile_a[at][line % 4u] = to_tile(v);
    }
}

// c[i, j..j+4] = alpha·v + beta·c (this workgroup's c from `c_off`), within bounds; or, for a
// masked term (`term`), c += alpha·dropout(v).
fn store4(c_off: u32, i: u32, j: u32, v: vec4<f32>, term: bool) {
    if (i >= p.M) {
        return;
    }
    for (var t = 0u; t < 4u; t++) {
        if (j + t < p.N) {
            var idx = c_off + i * p.N + j + t;
            // (a split reduction's parts go to their scratch as they are; its sum into the blocks)
            if (p.c_block2 != 0u && p.splits <= 1u) {
                idx = block_index(i, j + t, vec2<u32>(p.c_block2, p.c_block3), vec2<u32>(p.c_block2_at, p.c_block3_at), p.N);
            }
            // (i's row in the tile: i0 is a multiple of its rows)
            let prod = row_unscaled(i % (8u * TY), p.alpha * v[t]);
            if (term) {
                c[idx] += drop_at(DROP_TERM, idx, prod);
                continue;
            }
            var out = drop_at(DROP_OUT, idx, prod);
            if (p.beta != 0.0) {
                out += p.beta * c[idx];
            }
            c[idx] = out;
        }
    }
}

// A 4 × 4 quarter of an invocation's block: rows i.., columns j.. (column t of acc holds row
// t). Its columns are named, not indexed in a loop: a matrix argument indexed by a loop that
// a compiler does not unroll is copied to memory.
fn store_quarter(c_off: u32, i: u32, j: u32, acc: mat4x4<f32>, term: bool) {
    store4(c_off, i, j, acc[0], term);
    store4(c_off, i + 1u, j, acc[1], term);
    store4(c_off, i + 2u, j, acc[2], term);
    store4(c_off, i + 3u, j, acc[3], term);
}

// An invocation's 8 × 4·CQ block (rows ia.. and ib.., columns ja.. and, where CQ is 2, jb..:
// see matmul_tiled).
fn store_block(c_off: u32, ia: u32, ib: u32, ja: u32, jb: u32, acc00: mat4x4<f32>, acc01: mat4x4<f32>,
               acc10: mat4x4<f32>, acc11: mat4x4<f32>, term: bool) {
    store_quarter(c_off, ia, ja, acc00, term);
    store_quarter(c_off, ib, ja, acc10, term);
    if (CQ == 2u) {
        store_quarter(c_off, ia, jb, acc01, term);
        store_quarter(c_off, ib, jb, acc11, term);
    }
}

@compute @workgroup_size(TX, TY, 1)
fn matmul_tiled(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(local_invocation_id) lid: vec3<u32>) {
    let i0 = wid.y * 8u * TY;
    let j0 = wid.x * tile_columns();
    // z: the batch item, and within it the part of a split reduction
    let zb = wid.z / p.splits;
    let zs = wid.z % p.splits;
    let a_off = zb * p.a_batch;
    let b_off = zb * p.b_batch;
    let c_off = zb * p.c_batch + zs * p.c_split;
    let flat = lid.y * TX + lid.x;
    // (this invocation's place in the grid of blocks: pieces/block_place.wgsl)
    let place = block_place(flat, TX, ROW_LANES);
    let sa = 2u * TY + 1u;
    let sb = CQ * TX + 1u;
    // acc{row quarter}{column quarter}, column t holding row t of the quarter: rows 4·y..
    // (quarter 0) and 4·TY + 4·y.. (quarter 1); columns 4·x.. and, where CQ is 2, 4·TX + 4·x..
    // ((x, y): place)
    // (acc01 and acc11 unused where it is 1)
    var acc00 = mat4x4<f32>();
    var acc01 = mat4x4<f32>();
    var acc10 = mat4x4<f32>();
    var acc11 = mat4x4<f32>();
    // this workgroup's part of the reduction
    var r_begin = 0u;
    var r_end = p.R;
    if (p.splits > 1u) {
        r_begin = zs * p.r_split;
        r_end = min(p.R, r_begin + p.r_split);
    }
    let ia = i0 + 4u * place.y;
    let ib = i0 + 4u * TY + 4u * place.y;
    let ja = j0 + 4u * place.x;
    let jb = j0 + 4u * TX + 4u * place.x;
    // the reduction's part, then the low-rank term's steps (by the first part of a split
    // reduction; the launcher never gives a batched launch a term)
    let segments = select(1u, 2u, LOW_RANK && wid.z == 0u);
    // Dropout on the term alone (LoRA's on dx): the product is stored first, and the term,
    // summed afresh, added through the mask.
    let masked_term = segments == 2u && p.drop_on == DROP_TERM;
    scale_rows(segments == 2u, a_off, i0, r_begin, r_end, flat);
    var iteration = 0u;
    for (var s = 0u; s < segments; s++) {
        let term = s == 1u;
        if (term && masked_term) {
            store_block(c_off, ia, ib, ja, jb, acc00, acc01, acc10, acc11, false);
            acc00 = mat4x4<f32>();
            acc01 = mat4x4<f32>();
            acc10 = mat4x4<f32>();
            acc11 = mat4x4<f32>();
        }
        let lo = select(r_begin, 0u, term);
        let hi = select(r_end, p.term_r, term);
        var staged_a: Staged;
        var staged_b: Staged;
        if (PREFETCH) {
            staged_a = load_a(term, a_off, i0, lo, hi, flat);
            staged_b = load_b(term, b_off, j0, lo, hi, flat);
        }
        for (var r0 = lo; r0 < hi; r0 += BK) {
            // (counted across both segments, so that the term's first writes do not go to the
            // tiles the product's last sums read)
            tile_buffer = iteration % BUFFERS;
            iteration++;
            // (a probe's tiles hold the first iteration's steps throughout)
            let at = select(r0, lo, PROBE != 0u);
            if (!PREFETCH && (PROBE == 0u || r0 == lo)) {
                staged_a = load_a(term, a_off, i0, r0, hi, flat);
                staged_b = load_b(term, b_off, j0, r0, hi, flat);
            }
            if (PROBE < 2u || r0 == lo) {
                put_a(term, a_off, i0, at, hi, flat, staged_a);
                put_b(term, b_off, j0, at, hi, flat, staged_b);
                workgroupBarrier();
            }
            // the next iteration's values on their way while this one's are summed
            if (PREFETCH && PROBE == 0u && r0 + BK < hi) {
                staged_a = load_a(term, a_off, i0, r0 + BK, hi, flat);
                staged_b = load_b(term, b_off, j0, r0 + BK, hi, flat);
            }
            let at_a = tile_buffer * BK * sa;
            let at_b = tile_buffer * BK * sb;
            for (var r = 0u; r < BK; r++) {
                let a0 = vec4<f32>(tile_a[at_a + r * sa + place.y]);
                let a1 = vec4<f32>(tile_a[at_a + r * sa + TY + place.y]);
                let b0 = vec4<f32>(tile_b[at_b + r * sb + place.x]);
                block_fma(&acc00, a0, b0);
                block_fma(&acc10, a1, b0);
                if (CQ == 2u) {
                    let b1 = vec4<f32>(tile_b[at_b + r * sb + TX + place.x]);
                    block_fma(&acc01, a0, b1);
                    block_fma(&acc11, a1, b1);
                }
            }
            // (with two tiles, the next iteration writes the other one: its barrier after the
            // writes keeps them from the tiles being summed)
            if (PROBE < 2u && BUFFERS == 1u) {
                workgroupBarrier();
            }
        }
    }
    store_block(c_off, ia, ib, ja, jb, acc00, acc01, acc10, acc11, masked_term);
}

// (bindings past matmul_tiled_low_rank.wgsl's c)
@group(0) @binding(5) var<storage, read> parts: array<f32>;
@group(0) @binding(6) var<storage, read_write> summed: array<f32>;

// summed = beta·summed + alpha·Σ_s parts[s·c_split + i]: the split reduction's last step
// (which applies DROP_OUT: the partial products do not). Each part holds a batch's M × N
// outputs back to back (c_split floats: one M × N where unbatched), item z's summed into
// summed[z·c_batch..]; into column blocks where the product's output is in them (unbatched).
@compute @workgroup_size(256)
fn matmul_sum_splits(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= p.c_split) { return; }
    var total = 0.0;
    for (var s = 0u; s < p.splits; s++) {
        total += parts[s * p.c_split + i];
    }
    let item = p.M * p.N;
    var at = (i / item) * p.c_batch + i % item;
    // (a stacked forward's output in column blocks where c_block2 says so)
    if (p.c_block2 != 0u) {
        at = block_index(i / p.N, i % p.N, vec2<u32>(p.c_block2, p.c_block3), vec2<u32>(p.c_block2_at, p.c_block3_at), p.N);
    }
    var v = drop_at(DROP_OUT, at, p.alpha * total);
    if (p.beta != 0.0) {
        v += p.beta * summed[at];
    }
    summed[at] = v;
}

// The forward of at most 16 rows of x (decoding: a token, or a server's batch of a few), for
// real GPUs: a tile of 64 × 64 outputs would leave all but a few rows idle. One workgroup of
// 64 invocations per output column j (row j of W) splits the reduction, consecutive
// invocations reading consecutive weights, each weight read once for all the rows, and sums
// the parts over the workgroup (pieces/gemv_sum.wgsl; on subgroup operations in the
// `_subgroups` variants):
//   c(i, j) = beta·c(i, j) + alpha · (Σ_r a(i, r)·b(j, r) + term_scale · Σ_q H(i,q)·V(j,q))
// (strides as above, z = 0; the low-rank term, LoRA's h·Bᵀ, where composed with one: summed
// after the reduction, pieces/low_rank_term.wgsl's gemv_term). Composed with an input norm
// (matmul_tiled_normed.wgsl, pieces/input_norm.wgsl, with a term's bindings too), a(i, ·)
// is normed as it is read: Σ_r a(i, r)·norm_w(r)·b(j, r) / rms(a(i, ·)), the term added
// unscaled. The grid folds columns past 65535 into y.
override GATE_GELU: bool = false; // (the gated kernel's activation, declared before GEMV_QUADS)
// #include "pieces/gemv_rows.wgsl"
// #include "pieces/gemv_sum.wgsl"

// One step of the reduction: W's value at r of the column (gate's, then up's where gated).
alias GemvWeights = vec2<f32>;

// Steps an invocation loads together before it uses them: a GPU hides a load's latency only
// behind other loads in flight, and a reduction of a few hundred steps over 64 invocations,
// one load at a time, would leave the memory mostly idle (a token's matrix-vector products
// are bound by reading the weights). The last batch is loaded whole too, its steps past the
// reduction from its last step (in bounds) and dropped (gemv_add's `live`), and gemv_add's
// loops have constant bounds, so that a reduction of R steps takes ⌈R / 512⌉ round trips to
// memory (SmolLM2's 576 steps 2, its 1,536 3; Qwen2.5's 4,864 10). The steps are still added
// in order, so the sums are the same as one at a time.
const GEMV_UNROLL: u32 = 8u;

// Row i's products at step r with w's two weights, and its square.
fn gemv_products(i: u32, r: u32, w: GemvWeights) -> vec3<f32> {
    let x = a[i * p.a_si + r * p.a_sr];
    return vec3<f32>(x * w, x * x);
}

@compute @workgroup_size(64)
fn matmul_gemv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, lane: GemvLane) {
    let lid = lane.index;
    let j = wid.x + wid.y * nwg.x;
    let live = j < p.N;
    let jb = min(j, p.N - 1u) * p.b_sj;
    var sums: GemvSums;
    for (var r = lid; r < p.R; r += GEMV_UNROLL * GEMV_WG) {
        var w: array<f32, GEMV_UNROLL>;
        for (var u = 0u; u < GEMV_UNROLL; u++) { w[u] = b[jb + min(r + u * GEMV_WG, p.R - 1u) * p.b_sr]; }
        for (var u = 0u; u < GEMV_UNROLL; u++) {
            let ru = min(r + u * GEMV_WG, p.R - 1u);
            gemv_add(&sums, ru, GemvWeights(w[u] * norm_weight(ru), 0.0), 1u, r + u * GEMV_WG < p.R);
        }
    }
    gemv_sum(lane, &sums, select(1u, 2u, NORMED));
    if (live && lid < p.M) {
        // (q, k and v of a few tokens in blocks: the stacked weights' parts apart)
        var idx = lid * p.N + j;
        if (p.c_block2 != 0u) {
            idx = block_index(lid, j, vec2<u32>(p.c_block2, p.c_block3), vec2<u32>(p.c_block2_at, p.c_block3_at), p.N);
        }
        var v = p.alpha * (gemv_row_sum(&sums, 0u, lid) * gemv_input_scale(gemv_row_sum(&sums, 1u, lid), p.R) + gemv_term(j, lid));
        if (p.beta != 0.0) {
            v += p.beta * c[idx];
        }
        c[idx] = v;
    }
}

// The gate and up projections of a gated MLP and its activation for at most 16 rows, in one
// launch (decoding): b holds W_gate's N rows, then W_up's, and workgroup j reduces rows j and
// N + j as matmul_gemv does (with its input norm, or a low-rank term over the stacked rows,
// where composed with one):
//   c(i, j) = act(Σ_r a(i, r)·b(j, r)) · Σ_r a(i, r)·b(N + j, r),   act: silu, or gelu where GATE_GELU

@compute @workgroup_size(64)
fn matmul_gemv_gated(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, lane: GemvLane) {
    let lid = lane.index;
    let j = wid.x + wid.y * nwg.x;
    let jg = min(j, p.N - 1u) * p.b_sj;
    let ju = jg + p.N * p.b_sj;
    var sums: GemvSums;
    for (var r = lid; r < p.R; r += GEMV_UNROLL * GEMV_WG) {
        var w: array<GemvWeights, GEMV_UNROLL>;
        for (var u = 0u; u < GEMV_UNROLL; u++) {
            let ru = min(r + u * GEMV_WG, p.R - 1u);
            w[u] = GemvWeights(b[jg + ru * p.b_sr], b[ju + ru * p.b_sr]);
        }
        for (var u = 0u; u < GEMV_UNROLL; u++) {
            let ru = min(r + u * GEMV_WG, p.R - 1u);
            gemv_add(&sums, ru, w[u] * norm_weight(ru), 2u, r + u * GEMV_WG < p.R);
        }
    }
    gemv_sum(lane, &sums, select(2u, 3u, NORMED));
    if (j < p.N && lid < p.M) {
        // composed with a low-rank term (LoRA's h·Bᵀ of gate and of up): V's rows j and N + j
        let scale = gemv_input_scale(gemv_row_sum(&sums, 2u, lid), p.R);
        let gate = gemv_row_sum(&sums, 0u, lid) * scale + gemv_term(j, lid);
        c[lid * p.N + j] = gated(gate, gemv_row_sum(&sums, 1u, lid) * scale + gemv_term(j + p.N, lid), GATE_GELU);
    }
}
