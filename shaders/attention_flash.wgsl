// Training attention flash-attention's way (GPUs): a workgroup takes 64 queries (or 64 keys)
// of one head and streams the other side through workgroup memory in blocks of 64, its
// scores and their gradients 64 × 64 tiles that never reach memory. attention.wgsl's
// contract: q (B, T, NH, HS), k and v (B, T, NKV, HS), seg (B, T) (token t sees token j iff
// j ≤ t, seg[j] = seg[t] and, with a window W, t − j < W), stats (B, NH, T, 2) = (lse,
// Σ dout·out); query head h reads KV head h / (NH / NKV).
//   attention_flash_forward:        out and stats.lse                  grid (T/64, NH, B)
//   attention_flash_backward_query: dq = scale·Σ_j dS·k_j              grid (parts, NH, B)
//   attention_flash_backward_kv:    dk = scale·Σ_t dSᵀ·q_t, dv = Σ_t Pᵀ·dout_t, each query
//                                   head's share (B, T, NH, HS)   grid (parts, NH, B)
//                                   (both in one pass, or each in a launch of its own: KV_PASS)
//   attention_flash_sum_heads:      dk and dv: the shares of the query heads that share a
//                                   KV head summed (where they are several), and of the
//                                   parts of a split block of keys (block_part)
//   attention_flash_sum_queries:    dq: the parts of a split block of queries summed
// (the first three's workgroups are counted with the blocks slowest: place_of)
// where P = exp(scale·q·kᵀ − lse) and dS = P·(dout·vᵀ − dsum); the backward's stats hold
// dsum already (attention_backward_prep). The forward also runs a prompt over the KV cache
// (B = 1, no segment ids): q and out (T, NH, HS) for the tokens at positions past..past+T,
// whose keys and values the caches' rows 0..past+T hold.
// Workgroups of 256 invocations, each at (tx, ty) of a 16 × 16 grid (tile_place): an
// invocation holds rows ty + 16i and columns tx + 16j (i, j < 4) of a tile, and dims tx + 16c
// of a head's rows (c < HS/16, rounded up), interleaved so that neighbouring invocations read
// neighbouring words of workgroup memory.

struct Params {
    B: u32,
    T: u32,
    NH: u32,
    NKV: u32,
    HS: u32,
    scale: f32,
    window: u32,
    // the queries' first position: 0, or the tokens already in the KV cache
    past: u32,
    // 1: seg holds the tokens' segment ids; 0: one sequence (the KV cache)
    segs: u32,
    // 1: the backward's kernels split their heaviest blocks in two (block_part)
    split: u32,
}

const BLOCK: u32 = 64u;
// Dims of a head per invocation: HS/16 rounded up to 1, 2, 4 or 8 (the launcher's variant;
// heads of up to 128, attention_flash.rs's MAX_HEAD_SIZE).
override DIMS: u32 = 8u;
// Whether this kernel zeroes its workgroup memory before its work (where the launcher's
// context asks for wgpu's zeroing: Kernel::pipeline_options), every invocation a share, as
// pieces/coop_gemm.wgsl's do. Every value is written before it is read, so the zeroing is a
// safeguard; wgpu's own, one invocation storing each array, took RADV's compiler some 3.5 s
// per kernel. (Declared before any override an expression initializes, which naga 30 needs.)
override ZEROED: bool = false;
// attention_flash_backward_kv's outputs: 0 dk and dv in one pass; 1 dv alone (the scores and
// the probabilities' sum); 2 dk alone (the scores, dp and the dS sum). Apart (the launcher's
// choice: attention_flash.rs's kv_passes), each pass recomputes the scores, some 25 % more of
// the kernel's multiply-adds, but holds one head's accumulators, not two: at heads of 128 (8
// dims an invocation) 32 values fewer an invocation (ACO: 120 and 132 VGPRs against 168),
// which may let a multiprocessor hold two workgroups, not one.
override KV_PASS: u32 = 0u;
// A masked score, and below what a score counts as masked.
const MASKED: f32 = -3.0e38;
const MASKED_BELOW: f32 = -1.0e38;

@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read> seg: array<u32>;
@group(0) @binding(4) var<storage, read> dout: array<f32>;
@group(0) @binding(5) var<storage, read_write> stats: array<f32>;
// forward: out; backward_query: dq; backward_kv: dk (and dv)
@group(0) @binding(6) var<storage, read_write> res: array<f32>;
@group(0) @binding(7) var<storage, read_write> dv: array<f32>;

@group(0) @binding(8) var<storage, read> share_k: array<f32>;
@group(0) @binding(9) var<storage, read> share_v: array<f32>;
@group(0) @binding(10) var<storage, read_write> sum_k: array<f32>;
@group(0) @binding(11) var<storage, read_write> sum_v: array<f32>;

@group(0) @binding(12) var<storage, read> share_q: array<f32>;
@group(0) @binding(13) var<storage, read_write> sum_q: array<f32>;
@group(1) @binding(0) var<uniform> p: Params;

// Two transposed chunks of 16 dims of 64 rows (from line 0 and from line 16 on), or 16 rows
// of a head (up to 16 × 32 vectors: stage_rows).
const STAGE_VECS: u32 = 544u;
var<workgroup> stage: array<vec4<f32>, STAGE_VECS>;
// A transposed chunk's line (one dim of the 64 rows) in vectors: rows r, r + 16, r + 32 and
// r + 48 in vector r of the line, so that products() reads an invocation's four rows (ty +
// 16i) of A, or its four of C (tx + 16j), as one vector, not four values. (17: lines 68 words
// apart, that a subgroup's stores of 16 dims of two rows fall on 16 banks.)
const LINE: u32 = 17u;
// 64 × 64 scores, probabilities or their gradients, a line of LINE vectors per column, its
// rows in the order the stage's lines keep them: (row, col) is element row / 16 of vector
// col · LINE + row % 16, so that add_tile_times reads an invocation's four rows (ty + 16i) of
// a column as one vector.
const TILE_VECS: u32 = 1088u;
var<workgroup> tile: array<vec4<f32>, TILE_VECS>;
var<workgroup> red: array<f32, 256>;
// per tile row (forward: maximum, sum, rescale; backward_query: lse, dsum) or column
// (backward_kv: the queries' lse, dsum)
var<workgroup> stat_a: array<f32, 64>;
var<workgroup> stat_b: array<f32, 64>;
var<workgroup> stat_c: array<f32, 64>;
var<workgroup> seg_rows: array<u32, 64>;
var<workgroup> seg_cols: array<u32, 64>;

// Every array above zeroed (ZEROED), by the workgroup's 256 invocations.
fn zero_workgroup_memory(li: u32) {
    for (var e = li; e < TILE_VECS; e += 256u) {
        tile[e] = vec4<f32>();
        if (e < STAGE_VECS) {
            stage[e] = vec4<f32>();
        }
    }
    red[li] = 0.0;
    if (li < BLOCK) {
        stat_a[li] = 0.0;
        stat_b[li] = 0.0;
        stat_c[li] = 0.0;
        seg_rows[li] = 0u;
        seg_cols[li] = 0u;
    }
    workgroupBarrier();
}

// #include "pieces/attention_layout.wgsl"
// #include "pieces/held_values.wgsl"
// #include "pieces/block_place.wgsl"

// (tx, ty) of invocation li: each 32 on 8 × 4 places, their lanes paired on the vectors they
// read (pieces/block_place.wgsl).
fn tile_place(li: u32) -> vec2<u32> {
    return block_place(li, 16u, false);
}

// The segment id of token i of row b.
fn seg_at(b: u32, i: u32) -> u32 {
    if (p.segs == 0u) { return 0u; }
    return seg[b * p.T + i];
}

// Rows of q (0) and dout (3): T; of k (1) and v (2): past + T.
fn rows_of(which: u32) -> u32 {
    return select(p.T, p.past + p.T, which == 1u || which == 2u);
}

fn fetch(which: u32, i: u32) -> f32 {
    switch which {
        case 0u: { return q[i]; }
        case 1u: { return k[i]; }
        case 2u: { return v[i]; }
        default: { return dout[i]; }
    }
}

// Whether the query at position t sees the key at j (both present), their segment ids given.
fn sees(t: u32, j: u32, seg_t: u32, seg_j: u32) -> bool {
    return j <= t && seg_t == seg_j && (p.window == 0u || t - j < p.window);
}

// Both stages load their four values first, each from a clamped index (0 where it lies past
// the rows or HS), and zero those outside as they store them: a load under a branch waits
// for the branch, and the four would reach memory one round trip at a time (as
// matmul_tiled.wgsl's load_a).

// Dims d0..d0 + 16 of rows r0..r0 + 64 of `which` (head hh of `heads`) into the stage from
// line `at` on, transposed (zeros past its rows and HS).
fn stage_transposed(li: u32, which: u32, at: u32, b: u32, r0: u32, heads: u32, hh: u32, d0: u32) {
    // (written out, not a loop filling a vector: see matmul_tiled.wgsl's Staged)
    let x = vec4<f32>(transposed_value(li, which, b, r0, heads, hh, d0, 0u), transposed_value(li, which, b, r0, heads, hh, d0, 1u),
                      transposed_value(li, which, b, r0, heads, hh, d0, 2u), transposed_value(li, which, b, r0, heads, hh, d0, 3u));
    for (var n = 0u; n < 4u; n++) {
        let e = staged_place(li, n);
        stage[(at + e.y) * LINE + e.x % 16u][e.x / 16u] = x[n];
    }
}

// The (row, dim) of the n-th of an invocation's values for stage_transposed: consecutive
// invocations take 16 dims of a row, then the same dims of the row 16 on, so that a
// subgroup's 32 stores (a line's vector r % 16, element r / 16) fall on 16 banks.
fn staged_place(li: u32, n: u32) -> vec2<u32> {
    let k = (li + 256u * n) / 16u;
    return vec2<u32>((k / 2u) % 16u + 16u * (k % 2u + 2u * (k / 32u)), li % 16u);
}

// The n-th of an invocation's values for stage_transposed: dim d0 + e.y of row r0 + e.x (e:
// staged_place), 0 past the rows or HS.
fn transposed_value(li: u32, which: u32, b: u32, r0: u32, heads: u32, hh: u32, d0: u32, n: u32) -> f32 {
    let e = staged_place(li, n);
    let inside = (r0 + e.x < rows_of(which)) & (d0 + e.y < p.HS);
    return select(0.0, fetch(which, select(0u, row(b, r0 + e.x, heads, hh) + d0 + e.y, inside)), inside);
}

// The dims a staged row holds: the DIMS · 16 an invocation's accumulators take.
fn row_width() -> u32 { return 16u * DIMS; }
// A staged row's vectors: 16 (dims tx + 16c, c < 4, in vector tx), or 32 (c < 8: those of
// c ≥ 4 in vector 16 + tx), so that add_weighted reads an invocation's dims of a row as one
// vector or two.
fn row_vectors() -> u32 { return 16u * ((DIMS + 3u) / 4u); }

// Rows r0..r0 + 16 of `which` (head hh of `heads`) into the stage, each row's dim d at
// vector (d / 64) · 16 + d % 16 of the row, element (d / 16) % 4 (zeros past its rows and HS),
// four values an invocation at a time.
fn stage_rows(li: u32, which: u32, b: u32, r0: u32, heads: u32, hh: u32) {
    let end = 16u * row_width();
    for (var e0 = li; e0 < end; e0 += 1024u) {
        let x = vec4<f32>(row_value(which, b, r0, heads, hh, e0), row_value(which, b, r0, heads, hh, e0 + 256u),
                          row_value(which, b, r0, heads, hh, e0 + 512u), row_value(which, b, r0, heads, hh, e0 + 768u));
        for (var n = 0u; n < 4u; n++) {
            let e = e0 + 256u * n;
            let d = e % row_width();
            if (e < end) { stage[e / row_width() * row_vectors() + d / 64u * 16u + d % 16u][d / 16u % 4u] = x[n]; }
        }
    }
}

// Element e of stage_rows' 16 rows (row e / row_width(), dim e % row_width()), 0 past them,
// HS or the rows of `which`.
fn row_value(which: u32, b: u32, r0: u32, heads: u32, hh: u32, e: u32) -> f32 {
    let r = e / row_width();
    let d = e % row_width();
    let inside = (e < 16u * row_width()) & (d < p.HS) & (r0 + r < rows_of(which));
    return select(0.0, fetch(which, select(0u, row(b, r0 + r, heads, hh) + d, inside)), inside);
}

// The invocation's 4 × 4 of the tile's products of rows of `a` (rows a0.., head ha of
// a_heads) with rows of `c` (rows c0.., head hc of c_heads) over the head.
// Column i of the result holds row ty + 16i (read as column_of(s, i)[j]: pieces/held_values.wgsl).
fn products(li: u32, a: u32, b: u32, a0: u32, a_heads: u32, ha: u32, c: u32, c0: u32, c_heads: u32, hc: u32) -> mat4x4<f32> {
    let tile_at = tile_place(li);
    let tx = tile_at.x;
    let ty = tile_at.y;
    var s = mat4x4<f32>();
    for (var d0 = 0u; d0 < p.HS; d0 += 16u) {
        workgroupBarrier();
        stage_transposed(li, a, 0u, b, a0, a_heads, ha, d0);
        stage_transposed(li, c, 16u, b, c0, c_heads, hc, d0);
        workgroupBarrier();
        for (var dd = 0u; dd < 16u; dd++) {
            // rows ty + 16i of A, and rows tx + 16j of C
            let av = stage[dd * LINE + ty];
            let cv = stage[(16u + dd) * LINE + tx];
            // (fused multiply-adds written out: see pieces/block_fma.wgsl)
            s[0] = fma(vec4<f32>(av.x), cv, s[0]);
            s[1] = fma(vec4<f32>(av.y), cv, s[1]);
            s[2] = fma(vec4<f32>(av.z), cv, s[2]);
            s[3] = fma(vec4<f32>(av.w), cv, s[3]);
        }
    }
    return s;
}

// An invocation's 4 rows × DIMS dims of a head's rows: dim tx + 16c of row ty + 16i is
// c{c}[i]. Named vectors, not an array that loops index (which a driver that does not unroll
// the loops keeps in memory); those past DIMS stay zero (branches on an override).
struct Rows {
    c0: vec4<f32>,
    c1: vec4<f32>,
    c2: vec4<f32>,
    c3: vec4<f32>,
    c4: vec4<f32>,
    c5: vec4<f32>,
    c6: vec4<f32>,
    c7: vec4<f32>,
}

// Dims tx + 16c of the 4 rows.
fn dims_of(acc: ptr<function, Rows>, c: u32) -> vec4<f32> {
    switch c {
        case 0u: { return (*acc).c0; }
        case 1u: { return (*acc).c1; }
        case 2u: { return (*acc).c2; }
        case 3u: { return (*acc).c3; }
        case 4u: { return (*acc).c4; }
        case 5u: { return (*acc).c5; }
        case 6u: { return (*acc).c6; }
        default: { return (*acc).c7; }
    }
}

// Every dim of row i times f[i].
fn rows_times(acc: ptr<function, Rows>, f: vec4<f32>) {
    let a = *acc;
    *acc = Rows(a.c0 * f, a.c1 * f, a.c2 * f, a.c3 * f, a.c4 * f, a.c5 * f, a.c6 * f, a.c7 * f);
}

// acc += w ⊗ the stage's row kk: row i of acc gains w[i] times each of its dims (fused
// multiply-adds written out: see pieces/block_fma.wgsl).
fn add_weighted(acc: ptr<function, Rows>, w: vec4<f32>, kk: u32, tx: u32) {
    // dims tx + 16c (c < 4; a vector's elements past DIMS are never read)
    let v = stage[kk * row_vectors() + tx];
    (*acc).c0 = fma(w, vec4<f32>(v.x), (*acc).c0);
    if (DIMS > 1u) {
        (*acc).c1 = fma(w, vec4<f32>(v.y), (*acc).c1);
    }
    if (DIMS > 2u) {
        (*acc).c2 = fma(w, vec4<f32>(v.z), (*acc).c2);
        (*acc).c3 = fma(w, vec4<f32>(v.w), (*acc).c3);
    }
    if (DIMS > 4u) {
        let v2 = stage[kk * row_vectors() + 16u + tx];
        (*acc).c4 = fma(w, vec4<f32>(v2.x), (*acc).c4);
        (*acc).c5 = fma(w, vec4<f32>(v2.y), (*acc).c5);
        (*acc).c6 = fma(w, vec4<f32>(v2.z), (*acc).c6);
        (*acc).c7 = fma(w, vec4<f32>(v2.w), (*acc).c7);
    }
}

// acc (4 rows × DIMS) += tile's rows · rows c0..c0 + 64 of `which` (head hh of heads).
fn add_tile_times(li: u32, acc: ptr<function, Rows>, which: u32, b: u32, c0: u32, heads: u32, hh: u32) {
    let tile_at = tile_place(li);
    let tx = tile_at.x;
    let ty = tile_at.y;
    for (var k0 = 0u; k0 < BLOCK; k0 += 16u) {
        workgroupBarrier();
        stage_rows(li, which, b, c0 + k0, heads, hh);
        workgroupBarrier();
        for (var kk = 0u; kk < 16u; kk++) {
            let col = k0 + kk;
            let w = tile[col * LINE + ty];
            add_weighted(acc, w, kk, tx);
        }
    }
}

// Where acc's row i (tile row ty + 16i, token r0 + that) and dim c go in a (B, T, heads, HS)
// tensor (head hh), or -1 past T or HS.
fn stored_at(li: u32, i: u32, c: u32, b: u32, r0: u32, heads: u32, hh: u32) -> i32 {
    let tile_at = tile_place(li);
    let t = r0 + tile_at.y + 16u * i;
    let d = tile_at.x + 16u * c;
    if (t >= p.T || d >= p.HS) { return -1; }
    return i32(row(b, t, heads, hh) + d);
}

// acc's rows times `scale` into res from `offset` on (head hh of heads; rows r0..).
fn store_rows(li: u32, acc: ptr<function, Rows>, b: u32, r0: u32, heads: u32, hh: u32, scale: f32, offset: u32) {
    for (var c = 0u; c < DIMS; c++) {
        let dims = dims_of(acc, c);
        for (var i = 0u; i < 4u; i++) {
            let at = stored_at(li, i, c, b, r0, heads, hh);
            if (at >= 0) { res[offset + u32(at)] = dims[i] * scale; }
        }
    }
}

// Where a workgroup works: the rank of its block (0: the block that sees the most keys or
// queries), its head and its row. GPUs start workgroups in the order of their index, x
// fastest: ranked blocks vary slowest, so that every head's and row's heaviest blocks start
// before any lighter one (the longest first, as a list schedule). With x the rank (within a
// head and row only), SmolLM2's 288 workgroups over some 264 at once left a head's heaviest
// blocks to start once the first round's lightest were done.
struct Place {
    rank: u32,
    h: u32,
    b: u32,
}

fn place_of(wid: vec3<u32>, nwg: vec3<u32>) -> Place {
    let heads_rows = nwg.y * nwg.z;
    let linear = wid.x + nwg.x * (wid.y + nwg.y * wid.z);
    let rest = linear % heads_rows;
    return Place(linear / heads_rows, rest % nwg.y, rest / nwg.y);
}

// The blocks of 64 rows a sequence takes.
fn blocks() -> u32 { return (p.T + BLOCK - 1u) / BLOCK; }
// The most blocks of the other side a part takes where the backward splits (block_part).
fn split_half() -> u32 { return (blocks() + 1u) / 2u; }
// Floats of one share of dq, dk or dv (B·T·NH·HS): a split's second share starts there.
fn share_len() -> u32 { return p.B * p.T * p.NH * p.HS; }

// Block `rank` of queries, the last first: they see the most keys.
fn last_blocks_first(rank: u32) -> u32 {
    return (blocks() - 1u - rank) * BLOCK;
}

// The first block of keys that queries t0.. may see (sliding windows start later).
fn first_key_block(t0: u32) -> u32 {
    if (p.window == 0u || t0 < p.window) { return 0u; }
    return (t0 + 1u - p.window) / BLOCK * BLOCK;
}

// Whether no query from the t0-th on sees a key of j0..=j_end (before it): they lie before
// its sequence or window. (Sequences are runs, so later queries see no earlier keys.)
fn keys_before(b: u32, t0: u32, j_end: u32) -> bool {
    let pos = p.past + t0;
    return j_end < pos && (seg_at(b, j_end) != seg_at(b, t0) || (p.window != 0u && pos - j_end >= p.window));
}

// The forward's score of the invocation's row ty + 16i and column tx + 16j (keys j0.., queries
// t0..), scaled, or MASKED where the query does not see the key.
fn forward_score(li: u32, i: u32, j: u32, t0: u32, j0: u32, s: mat4x4<f32>) -> f32 {
    let tile_at = tile_place(li);
    let ri = tile_at.y + 16u * i;
    let jj = tile_at.x + 16u * j;
    let t = t0 + ri;
    let seen = t < p.T && j0 + jj < p.past + p.T && sees(p.past + t, j0 + jj, seg_rows[ri], seg_cols[jj]);
    return select(MASKED, column_of(s, i)[j] * p.scale, seen);
}

@compute @workgroup_size(256)
fn attention_flash_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    if (ZEROED) {
        zero_workgroup_memory(li);
    }
    let place = place_of(wid, nwg);
    let b = place.b;
    let h = place.h;
    let t0 = last_blocks_first(place.rank);
    let kvh = h / (p.NH / p.NKV);
    let tile_at = tile_place(li);
    let tx = tile_at.x;
    let ty = tile_at.y;
    if (li < BLOCK) {
        seg_rows[li] = seg_at(b, min(t0 + li, p.T - 1u));
        stat_a[li] = MASKED;
        stat_b[li] = 0.0;
    }
    var o = Rows();
    // the keys: up to the last query's position
    let keys = p.past + p.T;
    let last = p.past + min(t0 + BLOCK, p.T) - 1u;
    let r = li % 64u;
    let part = li / 64u;
    for (var j0 = first_key_block(p.past + t0); j0 <= last; j0 += BLOCK) {
        if (keys_before(b, t0, min(j0 + BLOCK, keys) - 1u)) { continue; }
        if (li < BLOCK) { seg_cols[li] = seg_at(b, min(j0 + li, keys - 1u)); }
        let s = products(li, 0u, b, t0, p.NH, h, 1u, j0, p.NKV, kvh);
        for (var j = 0u; j < 4u; j++) {
            let jj = tx + 16u * j;
            tile[jj * LINE + ty] = vec4<f32>(forward_score(li, 0u, j, t0, j0, s), forward_score(li, 1u, j, t0, j0, s),
                                             forward_score(li, 2u, j, t0, j0, s), forward_score(li, 3u, j, t0, j0, s));
        }
        workgroupBarrier();
        // the online softmax, 4 invocations per row (a quarter of the workgroup each, so that a
        // subgroup's 32 reads, rows apart, fall on 16 banks): the block's maximum, then its sum
        var mx = MASKED;
        for (var c = 0u; c < 16u; c++) { mx = max(mx, tile[(part * 16u + c) * LINE + r % 16u][r / 16u]); }
        red[li] = mx;
        workgroupBarrier();
        let m_old = stat_a[r];
        let m_new = max(m_old, max(max(red[r], red[r + 64u]), max(red[r + 128u], red[r + 192u])));
        var sum = 0.0;
        for (var c = 0u; c < 16u; c++) {
            let at = (part * 16u + c) * LINE + r % 16u;
            let x = tile[at][r / 16u];
            let e = select(0.0, exp(x - m_new), x > MASKED_BELOW);
            tile[at][r / 16u] = e;
            sum += e;
        }
        workgroupBarrier();
        red[li] = sum;
        workgroupBarrier();
        if (part == 0u) {
            let rescale = exp(m_old - m_new);
            stat_a[r] = m_new;
            stat_b[r] = stat_b[r] * rescale + red[r] + red[r + 64u] + red[r + 128u] + red[r + 192u];
            stat_c[r] = rescale;
        }
        workgroupBarrier();
        rows_times(&o, vec4<f32>(stat_c[ty], stat_c[ty + 16u], stat_c[ty + 32u], stat_c[ty + 48u]));
        add_tile_times(li, &o, 2u, b, j0, p.NKV, kvh);
    }
    workgroupBarrier();
    rows_times(&o, 1.0 / vec4<f32>(stat_b[ty], stat_b[ty + 16u], stat_b[ty + 32u], stat_b[ty + 48u]));
    store_rows(li, &o, b, t0, p.NH, h, 1.0, 0u);
    if (li < BLOCK && t0 + li < p.T) { stats[stat(b, h, t0 + li)] = stat_a[li] + log(stat_b[li]); }
}

// dS of the invocation's query row ty + 16i and key column tx + 16j (queries t0.., keys j0..),
// 0 where the query does not see the key.
fn query_ds(li: u32, i: u32, j: u32, t0: u32, j0: u32, s: mat4x4<f32>, dp: mat4x4<f32>) -> f32 {
    let tile_at = tile_place(li);
    let ri = tile_at.y + 16u * i;
    let jj = tile_at.x + 16u * j;
    let t = t0 + ri;
    let seen = t < p.T && j0 + jj < p.T && sees(t, j0 + jj, seg_rows[ri], seg_cols[jj]);
    return select(0.0, exp(column_of(s, i)[j] * p.scale - stat_a[ri]) * (column_of(dp, i)[j] - stat_b[ri]), seen);
}

@compute @workgroup_size(256)
fn attention_flash_backward_query(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    if (ZEROED) {
        zero_workgroup_memory(li);
    }
    let place = place_of(wid, nwg);
    let b = place.b;
    let h = place.h;
    // the keys' kernel's part, mirrored: its block of keys x is block n − 1 − x of queries
    // here, and its blocks of queries y..z are blocks of keys n − z..n − y (unsplit, the last
    // block of queries first, against every key up to its own)
    let part = block_part(place.rank);
    let n = blocks();
    let t0 = (n - 1u - part.x) * BLOCK;
    let keys_end = min((n - part.y) * BLOCK, p.T);
    let offset = part.w * share_len();
    let kvh = h / (p.NH / p.NKV);
    let tile_at = tile_place(li);
    let tx = tile_at.x;
    let ty = tile_at.y;
    if (li < BLOCK) {
        let t = min(t0 + li, p.T - 1u);
        seg_rows[li] = seg_at(b, t);
        stat_a[li] = stats[stat(b, h, t)];
        stat_b[li] = stats[stat(b, h, t) + 1u];
    }
    var acc = Rows();
    for (var j0 = max(first_key_block(t0), (n - part.z) * BLOCK); j0 < keys_end; j0 += BLOCK) {
        if (keys_before(b, t0, min(j0 + BLOCK, p.T) - 1u)) { continue; }
        if (li < BLOCK) { seg_cols[li] = seg_at(b, min(j0 + li, p.T - 1u)); }
        let s = products(li, 0u, b, t0, p.NH, h, 1u, j0, p.NKV, kvh);
        let dp = products(li, 3u, b, t0, p.NH, h, 2u, j0, p.NKV, kvh);
        for (var j = 0u; j < 4u; j++) {
            let jj = tx + 16u * j;
            tile[jj * LINE + ty] = vec4<f32>(query_ds(li, 0u, j, t0, j0, s, dp), query_ds(li, 1u, j, t0, j0, s, dp),
                                             query_ds(li, 2u, j, t0, j0, s, dp), query_ds(li, 3u, j, t0, j0, s, dp));
        }
        add_tile_times(li, &acc, 1u, b, j0, p.NKV, kvh);
    }
    store_rows(li, &acc, b, t0, p.NH, h, p.scale, offset);
}

// Key row ty + 16i of the backward's tile (keys j0.., queries t0..): its probabilities into the
// tile, and its dS (the probabilities times dp less the queries' dot(dout, out)), returned.
fn kv_scores(li: u32, i: u32, j0: u32, t0: u32, s: mat4x4<f32>, dp: mat4x4<f32>) -> vec4<f32> {
    let ri = tile_place(li).y + 16u * i;
    let sr = column_of(s, i);
    let dpr = column_of(dp, i);
    return vec4<f32>(kv_score(li, ri, j0, t0, 0u, sr.x, dpr.x), kv_score(li, ri, j0, t0, 1u, sr.y, dpr.y),
                     kv_score(li, ri, j0, t0, 2u, sr.z, dpr.z), kv_score(li, ri, j0, t0, 3u, sr.w, dpr.w));
}

// kv_scores' query c (column tx + 16c) of key row ri: its probability into the tile (for dv's
// sum: not in dk's pass alone), dS returned.
fn kv_score(li: u32, ri: u32, j0: u32, t0: u32, c: u32, sv: f32, dpv: f32) -> f32 {
    let cj = tile_place(li).x + 16u * c;
    let t = t0 + cj;
    let j = j0 + ri;
    let seen = t < p.T && j < p.T && sees(t, j, seg_cols[cj], seg_rows[ri]);
    let pr = select(0.0, exp(sv * p.scale - stat_a[cj]), seen);
    if (KV_PASS != 2u) {
        tile[cj * LINE + ri % 16u][ri / 16u] = pr;
    }
    return pr * (dpv - stat_b[cj]);
}

// The keys' kernel's part `rank` of a head and row: its block of keys (x), the blocks of
// queries it takes (y..z) and the share it writes (w: 0, or 1 past the first B·T·NH·HS).
// Unsplit, block x takes every query from its own on. Split (p.split: causal, no window, 3
// blocks or more), the n blocks' work (n − x blocks of queries each) is cut to at most
// h = ⌈n / 2⌉: blocks x < n − h take the last h blocks of queries in one part (share 1)
// and the rest in another (share 0), so that the longest part is h, not n. The parts go
// heaviest first: the n − h parts of h, (n odd) block n − h's h, then for each w from
// n − h down to 1, block n − w whole and the first part of block n − h − w. The query
// gradient's kernel takes the same parts mirrored (attention_flash_backward_query).
fn block_part(rank: u32) -> vec4<u32> {
    let n = blocks();
    if (p.split == 0u) { return vec4<u32>(rank, rank, n, 0u); }
    let h = split_half();
    let tails = n - h;
    if (rank < tails) { return vec4<u32>(rank, tails, n, 1u); }
    let odd = 2u * h - n;
    if (rank < tails + odd) { return vec4<u32>(tails, tails, n, 0u); }
    let s = rank - tails - odd;
    let w = tails - s / 2u;
    if (s % 2u == 0u) { return vec4<u32>(n - w, n - w, n, 0u); }
    return vec4<u32>(tails - w, tails - w, tails, 0u);
}

@compute @workgroup_size(256)
fn attention_flash_backward_kv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    if (ZEROED) {
        zero_workgroup_memory(li);
    }
    // (the heaviest parts first: block_part)
    let place = place_of(wid, nwg);
    let b = place.b;
    let h = place.h;
    let kvh = h / (p.NH / p.NKV);
    let part = block_part(place.rank);
    let j0 = part.x * BLOCK;
    let j_last = min(j0 + BLOCK, p.T) - 1u;
    let offset = part.w * share_len();
    let tile_at = tile_place(li);
    let tx = tile_at.x;
    let ty = tile_at.y;
    if (li < BLOCK) { seg_rows[li] = seg_at(b, min(j0 + li, p.T - 1u)); }
    var dk_acc = Rows();
    var dv_acc = Rows();
    for (var t0 = part.y * BLOCK; t0 < min(part.z * BLOCK, p.T); t0 += BLOCK) {
        // no query from t0 on sees these keys: a later sequence, or past the window
        if (t0 > j_last && (seg_at(b, t0) != seg_at(b, j_last) || (p.window != 0u && t0 - j_last >= p.window))) { break; }
        workgroupBarrier();
        if (li < BLOCK) {
            let t = min(t0 + li, p.T - 1u);
            seg_cols[li] = seg_at(b, t);
            stat_a[li] = stats[stat(b, h, t)];
            stat_b[li] = stats[stat(b, h, t) + 1u];
        }
        // the tile's rows are keys, its columns queries (dv's pass needs no dp: dS goes unused)
        let s = products(li, 1u, b, j0, p.NKV, kvh, 0u, t0, p.NH, h);
        var dp = mat4x4<f32>();
        if (KV_PASS != 1u) {
            dp = products(li, 2u, b, j0, p.NKV, kvh, 3u, t0, p.NH, h);
        }
        let ds = mat4x4<f32>(kv_scores(li, 0u, j0, t0, s, dp), kv_scores(li, 1u, j0, t0, s, dp), kv_scores(li, 2u, j0, t0, s, dp), kv_scores(li, 3u, j0, t0, s, dp));
        if (KV_PASS != 2u) {
            add_tile_times(li, &dv_acc, 3u, b, t0, p.NH, h);
        }
        if (KV_PASS != 1u) {
            workgroupBarrier();
            for (var c = 0u; c < 4u; c++) { tile[(tx + 16u * c) * LINE + ty] = transpose(ds)[c]; }
            add_tile_times(li, &dk_acc, 0u, b, t0, p.NH, h);
        }
    }
    // (with one query head per KV head and no split, (NH, h) is (NKV, kvh): dk and dv
    // themselves)
    if (KV_PASS != 1u) {
        store_rows(li, &dk_acc, b, j0, p.NH, h, p.scale, offset);
    }
    if (KV_PASS == 2u) {
        return;
    }
    for (var c = 0u; c < DIMS; c++) {
        let dims = dims_of(&dv_acc, c);
        for (var i = 0u; i < 4u; i++) {
            let at = stored_at(li, i, c, b, j0, p.NH, h);
            if (at >= 0) { dv[offset + u32(at)] = dims[i]; }
        }
    }
}

@compute @workgroup_size(256)
fn attention_flash_sum_heads(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = gid.x + gid.y * nwg.x * 256u;
    if (e >= p.B * p.T * p.NKV * p.HS) { return; }
    let group = p.NH / p.NKV;
    // (b·T + t, kvh, d) of dk → the share of query head kvh·group + g
    let d = e % p.HS;
    let kvh = (e / p.HS) % p.NKV;
    let bt = e / (p.HS * p.NKV);
    // split: the keys of blocks before n − ⌈n / 2⌉ have a second share (block_part)
    let second = p.split == 1u && (bt % p.T) / BLOCK < blocks() - split_half();
    let slot = share_len();
    var sk = 0.0;
    var sv = 0.0;
    for (var g = 0u; g < group; g++) {
        let at = (bt * p.NH + kvh * group + g) * p.HS + d;
        sk += share_k[at];
        sv += share_v[at];
        if (second) {
            sk += share_k[slot + at];
            sv += share_v[slot + at];
        }
    }
    sum_k[e] = sk;
    sum_v[e] = sv;
}

// dq where the query gradient's blocks are split (block_part, mirrored): the blocks of
// queries from ⌈n / 2⌉ on have a second share.
@compute @workgroup_size(256)
fn attention_flash_sum_queries(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = gid.x + gid.y * nwg.x * 256u;
    let slot = share_len();
    if (e >= slot) { return; }
    let t = (e / (p.NH * p.HS)) % p.T;
    sum_q[e] = share_q[e] + select(0.0, share_q[slot + e], t / BLOCK >= split_half());
}
