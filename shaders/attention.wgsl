// Causal self-attention with grouped-query heads over packed rows:
//   q (B, T, NH, HS), k and v (B, T, NKV, HS), seg (B, T): token t sees token j iff j ≤ t
//   and seg[j] = seg[t] (so several sequences can share a row), and with a window W,
//   t − j < W (sliding-window layers). Query head h reads KV head
//   h / (NH / NKV). out (B, T, NH, HS); stats (B, NH, T, 2) holds (lse, Σ dout·out) per row.
// Each invocation owns one query (or key) row and streams over the other side with an
// online softmax, so memory grows with T·HS and no T×T matrix exists.
//   attention_forward_*:        out, stats.lse
//   attention_backward_prep:    stats.dsum = Σ dout·out          (per query row; the
//                               matmul kernels' first step: the _rows and _tiled query
//                               kernels work it out themselves)
//   attention_backward_query_*: stats.dsum, and dq = scale·Σ_j P(dP − dsum)·k_j
//   attention_backward_kv_*:    dk = scale·Σ_t P(dP − dsum)·q_t,  dv = Σ_t P·dout_t
//                               summed over the query heads that share the KV head.
//   (* = rows or tiled: the same results, see the tiled kernels' comment.)
//   attention_forward_cached(_tiled): inference with a KV cache, one sequence: q (T, NH, HS)
//                              for the tokens at positions past..past+T, k and v caches
//                              (≥ past+T, NKV, HS) that already hold them; query t sees cache
//                              rows 0..=past+t.

struct Params {
    B: u32,
    T: u32,
    NH: u32,
    NKV: u32,
    HS: u32,
    scale: f32,
    past: u32,   // attention_forward_cached and attention_decode
    window: u32, // a query at t sees keys t − window < j ≤ t (Gemma's sliding layers); 0: all
    // The backward's rope (0 rotary dims: none): the _rows and _tiled kernels store dq and dk
    // rotated back as rope_backward_in_place would, for a token at the position that the
    // segment ids' binding holds `pos_at` words on (rope.wgsl: θ = pos·freqs[i], m = mscale).
    rot: u32,
    mscale: f32,
    zero: u32,   // 0 (pieces/sincos.wgsl's `kept`)
    pos_at: u32,
    // attention_decode: 1 where the token's key and value come apart from the cache (d_k_new,
    // d_v_new), which it stores them into at row `past`; the token's row in the query, the
    // output and those (a batch's sequences, one token each).
    append: u32,
    row: u32,
    // attention_decode: keys per workgroup where it splits a head's keys over several
    // (attention_decode_combine then forms the output); 0: one workgroup per head
    split_len: u32,
    // attention_decode of a batch's sequences, one token each (z of the grid: the row), in
    // one launch: the floats of each one's part of the scratch; 0: one token (past, row and
    // split_len above), else each row's own in d_seqs
    batch_scratch: u32,
    freqs: array<vec4<f32>, 28>,
}

// The largest head: the per-row arrays below hold one head. core/build/ also writes
// attention_wide.wgsl with 256 (Gemma 3), used only for heads above 128: larger arrays cost
// the usual heads about 10 % on llvmpipe.
const MAX_HS: u32 = 128u;

// The first key a query at position t sees.
fn first_key(t: u32) -> u32 {
    if (p.window == 0u || t < p.window) { return 0u; }
    return t + 1u - p.window;
}

// One past the last query that sees the key at position j.
fn query_end(j: u32) -> u32 {
    if (p.window == 0u) { return p.T; }
    return min(p.T, j + p.window);
}

@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read> seg: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read_write> stats: array<f32>;

@group(0) @binding(6) var<storage, read> p_dout: array<f32>;
@group(0) @binding(7) var<storage, read> p_out: array<f32>;
@group(0) @binding(8) var<storage, read_write> p_stats: array<f32>;

@group(0) @binding(9) var<storage, read> q_dout: array<f32>;
@group(0) @binding(10) var<storage, read> q_q: array<f32>;
@group(0) @binding(11) var<storage, read> q_k: array<f32>;
@group(0) @binding(12) var<storage, read> q_v: array<f32>;
@group(0) @binding(13) var<storage, read> q_out: array<f32>;
@group(0) @binding(14) var<storage, read> q_seg: array<u32>;
@group(0) @binding(15) var<storage, read_write> q_stats: array<f32>;
@group(0) @binding(16) var<storage, read_write> dq: array<f32>;

@group(0) @binding(17) var<storage, read> kv_dout: array<f32>;
@group(0) @binding(18) var<storage, read> kv_q: array<f32>;
@group(0) @binding(19) var<storage, read> kv_k: array<f32>;
@group(0) @binding(20) var<storage, read> kv_v: array<f32>;
@group(0) @binding(21) var<storage, read> kv_stats: array<f32>;
@group(0) @binding(22) var<storage, read> kv_seg: array<u32>;
@group(0) @binding(23) var<storage, read_write> dk: array<f32>;
@group(0) @binding(24) var<storage, read_write> dv: array<f32>;
@group(1) @binding(0) var<uniform> p: Params;

// #include "pieces/sincos.wgsl"

// Rope's rotation (rope.wgsl's, in its order of operations) of the pair (x1, x2), dims j and
// j + rot/2 of a head, at position `pos`; sign −1: the transposed rotation (θ → −θ).
fn rope_pair(x1: f32, x2: f32, j: u32, pos: u32, sign: f32) -> vec2<f32> {
    let sc = sincos(f32(pos) * p.freqs[j / 4u][j % 4u]);
    let c = p.mscale * sc.y;
    let s = p.mscale * sign * sc.x;
    return vec2<f32>(x1 * c - x2 * s, x2 * c + x1 * s);
}

// Rope's backward on the gradient `g` of a head of the token at position `pos`, where the
// params ask for it. (Without rope, pos_at is 0 and the callers' `pos` is the token's segment
// id, unused.)
fn rotate_back(g: ptr<function, array<f32, MAX_HS>>, pos: u32) {
    let rh = p.rot / 2u;
    for (var j = 0u; j < rh; j++) {
        let r = rope_pair((*g)[j], (*g)[j + rh], j, pos, -1.0);
        (*g)[j] = r.x;
        (*g)[j + rh] = r.y;
    }
}

// #include "pieces/attention_layout.wgsl"

@compute @workgroup_size(64)
fn attention_forward_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.B * p.NH * p.T) { return; }
    let t = i % p.T;
    let h = (i / p.T) % p.NH;
    let b = i / (p.T * p.NH);
    let kvh = h / (p.NH / p.NKV);
    let qb = row(b, t, p.NH, h);
    let my_seg = seg[b * p.T + t];
    var qv: array<f32, MAX_HS>;
    var acc: array<f32, MAX_HS>;
    for (var d = 0u; d < p.HS; d++) { qv[d] = q[qb + d] * p.scale; acc[d] = 0.0; }
    var m = -3.0e38;
    var l = 0.0;
    for (var j = first_key(t); j <= t; j++) {
        if (seg[b * p.T + j] != my_seg) { continue; }
        let kb = row(b, j, p.NKV, kvh);
        var s = 0.0;
        for (var d = 0u; d < p.HS; d++) { s += qv[d] * k[kb + d]; }
        let m_new = max(m, s);
        let corr = exp(m - m_new);
        let e = exp(s - m_new);
        l = l * corr + e;
        for (var d = 0u; d < p.HS; d++) { acc[d] = acc[d] * corr + e * v[kb + d]; }
        m = m_new;
    }
    for (var d = 0u; d < p.HS; d++) { out[qb + d] = acc[d] / l; }
    stats[stat(b, h, t)] = m + log(l);
}

// Σ dout·out of the query row at `qb` (its dout in `go`), in attention_backward_prep's order:
// the query kernels' dsum, which they store for the keys' kernel after them.
fn query_dsum(qb: u32, go: ptr<function, array<f32, MAX_HS>>) -> f32 {
    var s = 0.0;
    for (var d = 0u; d < p.HS; d++) { s += (*go)[d] * q_out[qb + d]; }
    return s;
}

@compute @workgroup_size(64)
fn attention_backward_query_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.B * p.NH * p.T) { return; }
    let t = i % p.T;
    let h = (i / p.T) % p.NH;
    let b = i / (p.T * p.NH);
    let kvh = h / (p.NH / p.NKV);
    let qb = row(b, t, p.NH, h);
    let lse = q_stats[stat(b, h, t)];
    let my_seg = q_seg[b * p.T + t];
    var qv: array<f32, MAX_HS>;
    var go: array<f32, MAX_HS>;
    var acc: array<f32, MAX_HS>;
    for (var d = 0u; d < p.HS; d++) { qv[d] = q_q[qb + d] * p.scale; go[d] = q_dout[qb + d]; acc[d] = 0.0; }
    let dsum = query_dsum(qb, &go);
    q_stats[stat(b, h, t) + 1u] = dsum;
    for (var j = first_key(t); j <= t; j++) {
        if (q_seg[b * p.T + j] != my_seg) { continue; }
        let kb = row(b, j, p.NKV, kvh);
        var s = 0.0;
        var dp = 0.0;
        for (var d = 0u; d < p.HS; d++) { s += qv[d] * q_k[kb + d]; dp += go[d] * q_v[kb + d]; }
        let ds = exp(s - lse) * (dp - dsum) * p.scale;
        for (var d = 0u; d < p.HS; d++) { acc[d] += ds * q_k[kb + d]; }
    }
    rotate_back(&acc, q_seg[p.pos_at + b * p.T + t]);
    for (var d = 0u; d < p.HS; d++) { dq[qb + d] = acc[d]; }
}

@compute @workgroup_size(64)
fn attention_backward_kv_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.B * p.NKV * p.T) { return; }
    let j = i % p.T;
    let kvh = (i / p.T) % p.NKV;
    let b = i / (p.T * p.NKV);
    let group = p.NH / p.NKV;
    let kb = row(b, j, p.NKV, kvh);
    let my_seg = kv_seg[b * p.T + j];
    var kvec: array<f32, MAX_HS>;
    var vvec: array<f32, MAX_HS>;
    var dka: array<f32, MAX_HS>;
    var dva: array<f32, MAX_HS>;
    for (var d = 0u; d < p.HS; d++) { kvec[d] = kv_k[kb + d]; vvec[d] = kv_v[kb + d]; dka[d] = 0.0; dva[d] = 0.0; }
    for (var h = kvh * group; h < (kvh + 1u) * group; h++) {
        for (var t = j; t < query_end(j); t++) {
            if (kv_seg[b * p.T + t] != my_seg) { break; } // (a later run: so are the rest)
            let qb = row(b, t, p.NH, h);
            var s = 0.0;
            var dp = 0.0;
            for (var d = 0u; d < p.HS; d++) { s += kv_q[qb + d] * kvec[d]; dp += kv_dout[qb + d] * vvec[d]; }
            let prob = exp(s * p.scale - kv_stats[stat(b, h, t)]);
            let ds = prob * (dp - kv_stats[stat(b, h, t) + 1u]) * p.scale;
            for (var d = 0u; d < p.HS; d++) {
                dva[d] += prob * kv_dout[qb + d];
                dka[d] += ds * kv_q[qb + d];
            }
        }
    }
    rotate_back(&dka, kv_seg[p.pos_at + b * p.T + j]);
    for (var d = 0u; d < p.HS; d++) { dk[kb + d] = dka[d]; dv[kb + d] = dva[d]; }
}

// The _tiled variants (real GPUs) run a workgroup of 64 invocations over 64 consecutive rows
// of one head (queries, or keys for backward_kv) and stream the other side through workgroup
// memory in tiles of up to 64 rows (1024 floats per tensor): each row of the other side is
// read from memory once per workgroup instead of once per invocation. The _rows variants
// above (software adapters, where workgroup barriers are costly and caches serve the
// repeated reads) read it directly.
const TILE: u32 = 1024u;
var<workgroup> tile_x: array<f32, TILE>;   // keys, or queries (backward_kv)
var<workgroup> tile_y: array<f32, TILE>;   // values, or dout (backward_kv)
var<workgroup> tile_seg: array<u32, 64>;
var<workgroup> tile_lse: array<f32, 64>;  // backward_kv: the queries' stats
var<workgroup> tile_dsum: array<f32, 64>;

// Rows of the other side per tile.
fn tile_rows() -> u32 {
    return min(TILE / p.HS, 64u);
}

// Packed rows hold several sequences, each a run of equal segment ids: a workgroup's queries
// (from t0 on) see no key before the run t0 lies in, and a workgroup's keys (up to j_last) no
// query past the run j_last lies in. The tiled kernels start their loops over keys at that run
// (found by bisection: within lo..=t0 the keys of t0's run are the last ones) and end those
// over queries at the first tile of a later run, so that a row of 4 × 512 tokens costs what
// 4 rows of 512 would, not a row of 2,048. One copy per kernel's binding of the ids.
fn run_start(b: u32, t0: u32, lo: u32) -> u32 {
    let s = seg[b * p.T + t0];
    var a = lo;
    var z = t0;
    while (a < z) {
        let mid = (a + z) / 2u;
        if (seg[b * p.T + mid] == s) { z = mid; } else { a = mid + 1u; }
    }
    return a;
}

fn q_run_start(b: u32, t0: u32, lo: u32) -> u32 {
    let s = q_seg[b * p.T + t0];
    var a = lo;
    var z = t0;
    while (a < z) {
        let mid = (a + z) / 2u;
        if (q_seg[b * p.T + mid] == s) { z = mid; } else { a = mid + 1u; }
    }
    return a;
}

// The online softmax's step for the staged key jj of a tile (tile_x, tile_y: keys and values)
// against the query `qv` (scaled): its score, then `ml` (maximum, sum) and `acc` (Σ of values
// weighted by exp(score − maximum)) rescaled to the new maximum and added to.
fn attend_staged(jj: u32, qv: ptr<function, array<f32, MAX_HS>>, acc: ptr<function, array<f32, MAX_HS>>, ml: ptr<function, vec2<f32>>) {
    let kb = jj * p.HS;
    var s = 0.0;
    for (var d = 0u; d < p.HS; d++) { s += (*qv)[d] * tile_x[kb + d]; }
    let m_new = max((*ml).x, s);
    let corr = exp((*ml).x - m_new);
    let e = exp(s - m_new);
    *ml = vec2<f32>(m_new, (*ml).y * corr + e);
    for (var d = 0u; d < p.HS; d++) { (*acc)[d] = (*acc)[d] * corr + e * tile_y[kb + d]; }
}

@compute @workgroup_size(64)
fn attention_forward_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let b = wid.z;
    let h = wid.y;
    let t0 = wid.x * 64u;
    let t = t0 + lid.x;
    let live = t < p.T;
    let tq = min(t, p.T - 1u);
    let kvh = h / (p.NH / p.NKV);
    let qb = row(b, tq, p.NH, h);
    let my_seg = seg[b * p.T + tq];
    var qv: array<f32, MAX_HS>;
    var acc: array<f32, MAX_HS>;
    for (var d = 0u; d < p.HS; d++) { qv[d] = q[qb + d] * p.scale; acc[d] = 0.0; }
    // (maximum, sum) of the online softmax
    var ml = vec2<f32>(-3.0e38, 0.0);
    let kt = tile_rows();
    let last = min(t0 + 63u, p.T - 1u);
    for (var j0 = run_start(b, t0, first_key(t0)); j0 <= last; j0 += kt) {
        workgroupBarrier();
        for (var e = lid.x; e < kt * p.HS; e += 64u) {
            let j = j0 + e / p.HS;
            if (j < p.T) {
                let kb = row(b, j, p.NKV, kvh) + e % p.HS;
                tile_x[e] = k[kb];
                tile_y[e] = v[kb];
            }
        }
        if (lid.x < kt && j0 + lid.x < p.T) { tile_seg[lid.x] = seg[b * p.T + j0 + lid.x]; }
        workgroupBarrier();
        if (live) {
            for (var jj = 0u; jj < kt; jj++) {
                if (j0 + jj > t) { break; }
                if (j0 + jj < first_key(t) || tile_seg[jj] != my_seg) { continue; }
                attend_staged(jj, &qv, &acc, &ml);
            }
        }
    }
    if (live) {
        for (var d = 0u; d < p.HS; d++) { out[qb + d] = acc[d] / ml.y; }
        stats[stat(b, h, t)] = ml.x + log(ml.y);
    }
}

@compute @workgroup_size(64)
fn attention_backward_prep(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.B * p.NH * p.T) { return; }
    let t = i % p.T;
    let h = (i / p.T) % p.NH;
    let b = i / (p.T * p.NH);
    let ob = row(b, t, p.NH, h);
    var s = 0.0;
    for (var d = 0u; d < p.HS; d++) { s += p_dout[ob + d] * p_out[ob + d]; }
    p_stats[stat(b, h, t) + 1u] = s;
}

@compute @workgroup_size(64)
fn attention_backward_query_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let b = wid.z;
    let h = wid.y;
    let t0 = wid.x * 64u;
    let t = t0 + lid.x;
    let live = t < p.T;
    let tq = min(t, p.T - 1u);
    let kvh = h / (p.NH / p.NKV);
    let qb = row(b, tq, p.NH, h);
    let lse = q_stats[stat(b, h, tq)];
    let my_seg = q_seg[b * p.T + tq];
    var qv: array<f32, MAX_HS>;
    var go: array<f32, MAX_HS>;
    var acc: array<f32, MAX_HS>;
    for (var d = 0u; d < p.HS; d++) { qv[d] = q_q[qb + d] * p.scale; go[d] = q_dout[qb + d]; acc[d] = 0.0; }
    let dsum = query_dsum(qb, &go);
    if (live) { q_stats[stat(b, h, t) + 1u] = dsum; }
    let kt = tile_rows();
    let last = min(t0 + 63u, p.T - 1u);
    for (var j0 = q_run_start(b, t0, first_key(t0)); j0 <= last; j0 += kt) {
        workgroupBarrier();
        for (var e = lid.x; e < kt * p.HS; e += 64u) {
            let j = j0 + e / p.HS;
            if (j < p.T) {
                let kb = row(b, j, p.NKV, kvh) + e % p.HS;
                tile_x[e] = q_k[kb];
                tile_y[e] = q_v[kb];
            }
        }
        if (lid.x < kt && j0 + lid.x < p.T) { tile_seg[lid.x] = q_seg[b * p.T + j0 + lid.x]; }
        workgroupBarrier();
        if (live) {
            for (var jj = 0u; jj < kt; jj++) {
                if (j0 + jj > t) { break; }
                if (j0 + jj < first_key(t) || tile_seg[jj] != my_seg) { continue; }
                let kb = jj * p.HS;
                var s = 0.0;
                var dp = 0.0;
                for (var d = 0u; d < p.HS; d++) { s += qv[d] * tile_x[kb + d]; dp += go[d] * tile_y[kb + d]; }
                let ds = exp(s - lse) * (dp - dsum) * p.scale;
                for (var d = 0u; d < p.HS; d++) { acc[d] += ds * tile_x[kb + d]; }
            }
        }
    }
    if (live) {
        rotate_back(&acc, q_seg[p.pos_at + b * p.T + t]);
        for (var d = 0u; d < p.HS; d++) { dq[qb + d] = acc[d]; }
    }
}

@compute @workgroup_size(64)
fn attention_backward_kv_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let b = wid.z;
    let kvh = wid.y;
    let j_first = wid.x * 64u;
    let j_last = min(j_first + 63u, p.T - 1u);
    let j = j_first + lid.x;
    let live = j < p.T;
    let jk = min(j, p.T - 1u);
    let group = p.NH / p.NKV;
    let kb = row(b, jk, p.NKV, kvh);
    let my_seg = kv_seg[b * p.T + jk];
    var kvec: array<f32, MAX_HS>;
    var vvec: array<f32, MAX_HS>;
    var dka: array<f32, MAX_HS>;
    var dva: array<f32, MAX_HS>;
    for (var d = 0u; d < p.HS; d++) { kvec[d] = kv_k[kb + d]; vvec[d] = kv_v[kb + d]; dka[d] = 0.0; dva[d] = 0.0; }
    let qt = tile_rows();
    for (var h = kvh * group; h < (kvh + 1u) * group; h++) {
        for (var t0 = j_first; t0 < query_end(j_last); t0 += qt) {
            // (queries of a later run than the last key's see none of the keys: run_start)
            if (t0 > j_last && kv_seg[b * p.T + t0] != kv_seg[b * p.T + j_last]) { break; }
            workgroupBarrier();
            for (var e = lid.x; e < qt * p.HS; e += 64u) {
                let t = t0 + e / p.HS;
                if (t < p.T) {
                    let qb = row(b, t, p.NH, h) + e % p.HS;
                    tile_x[e] = kv_q[qb];
                    tile_y[e] = kv_dout[qb];
                }
            }
            if (lid.x < qt && t0 + lid.x < p.T) {
                let t = t0 + lid.x;
                tile_seg[lid.x] = kv_seg[b * p.T + t];
                tile_lse[lid.x] = kv_stats[stat(b, h, t)];
                tile_dsum[lid.x] = kv_stats[stat(b, h, t) + 1u];
            }
            workgroupBarrier();
            if (live) {
                for (var tt = 0u; tt < qt; tt++) {
                    let t = t0 + tt;
                    if (t >= p.T) { break; }
                    if (t < j || t >= query_end(j) || tile_seg[tt] != my_seg) { continue; }
                    let qb = tt * p.HS;
                    var s = 0.0;
                    var dp = 0.0;
                    for (var d = 0u; d < p.HS; d++) { s += tile_x[qb + d] * kvec[d]; dp += tile_y[qb + d] * vvec[d]; }
                    let prob = exp(s * p.scale - tile_lse[tt]);
                    let ds = prob * (dp - tile_dsum[tt]) * p.scale;
                    for (var d = 0u; d < p.HS; d++) {
                        dva[d] += prob * tile_y[qb + d];
                        dka[d] += ds * tile_x[qb + d];
                    }
                }
            }
        }
    }
    if (live) {
        rotate_back(&dka, kv_seg[p.pos_at + b * p.T + j]);
        for (var d = 0u; d < p.HS; d++) { dk[kb + d] = dka[d]; dv[kb + d] = dva[d]; }
    }
}

@group(0) @binding(25) var<storage, read> c_q: array<f32>;
@group(0) @binding(26) var<storage, read> c_k: array<f32>;
@group(0) @binding(27) var<storage, read> c_v: array<f32>;
@group(0) @binding(28) var<storage, read_write> c_out: array<f32>;

@compute @workgroup_size(64)
fn attention_forward_cached(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.NH * p.T) { return; }
    let t = i / p.NH;
    let h = i % p.NH;
    let kvh = h / (p.NH / p.NKV);
    let qb = (t * p.NH + h) * p.HS;
    var qv: array<f32, MAX_HS>;
    var acc: array<f32, MAX_HS>;
    for (var d = 0u; d < p.HS; d++) { qv[d] = c_q[qb + d] * p.scale; acc[d] = 0.0; }
    var m = -3.0e38;
    var l = 0.0;
    for (var j = first_key(p.past + t); j <= p.past + t; j++) {
        let kb = (j * p.NKV + kvh) * p.HS;
        var s = 0.0;
        for (var d = 0u; d < p.HS; d++) { s += qv[d] * c_k[kb + d]; }
        let m_new = max(m, s);
        let corr = exp(m - m_new);
        let e = exp(s - m_new);
        l = l * corr + e;
        for (var d = 0u; d < p.HS; d++) { acc[d] = acc[d] * corr + e * c_v[kb + d]; }
        m = m_new;
    }
    for (var d = 0u; d < p.HS; d++) { c_out[qb + d] = acc[d] / l; }
}

// attention_forward_cached for GPUs: a workgroup per 64 queries of a head, which streams the
// cache's keys and values through workgroup memory as attention_forward_tiled does (each
// key read from memory once per workgroup, not once per query and head), from the first key
// its first query sees to the last one its last query sees.
@compute @workgroup_size(64)
fn attention_forward_cached_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let h = wid.y;
    let t0 = wid.x * 64u;
    let t = t0 + lid.x;
    let live = t < p.T;
    let tq = min(t, p.T - 1u);
    let kvh = h / (p.NH / p.NKV);
    let qb = (tq * p.NH + h) * p.HS;
    var qv: array<f32, MAX_HS>;
    var acc: array<f32, MAX_HS>;
    for (var d = 0u; d < p.HS; d++) { qv[d] = c_q[qb + d] * p.scale; acc[d] = 0.0; }
    // (maximum, sum) of the online softmax
    var ml = vec2<f32>(-3.0e38, 0.0);
    let kt = tile_rows();
    let last = p.past + min(t0 + 63u, p.T - 1u);
    for (var j0 = first_key(p.past + t0); j0 <= last; j0 += kt) {
        workgroupBarrier();
        for (var e = lid.x; e < kt * p.HS; e += 64u) {
            let j = j0 + e / p.HS;
            if (j <= last) {
                let kb = (j * p.NKV + kvh) * p.HS + e % p.HS;
                tile_x[e] = c_k[kb];
                tile_y[e] = c_v[kb];
            }
        }
        workgroupBarrier();
        if (live) {
            for (var jj = 0u; jj < kt; jj++) {
                let j = j0 + jj;
                if (j > p.past + t) { break; }
                if (j < first_key(p.past + t)) { continue; }
                attend_staged(jj, &qv, &acc, &ml);
            }
        }
    }
    if (live) {
        for (var d = 0u; d < p.HS; d++) { c_out[qb + d] = acc[d] / ml.y; }
    }
}

// Decoding one token (T = 1) at position `past` (attention_forward_cached gives each query
// one invocation that walks the whole cache; here a workgroup of DECODE_WG invocations shares
// each head's). HS must be a multiple of 4: vec4 loads.
//   attention_decode: out (NH, HS) = Σ_j softmax(scale · q_h · k_j)_j · v_j, a workgroup per
//                     query head; scores (NH, past+1) its scratch
// The workgroup stages the head's query, then its invocations split the keys twice: for the
// scores (written to `scores`) and their softmax's maximum and sum (each invocation its share
// in one pass, then the shares combined 8 at a time), then as (key chunk c, vec4 e of HS)
// pairs for the values, chunk c taking keys first + c, first + c + chunks, ... So no
// invocation walks the whole cache, and there are few barriers. The launcher sets DECODE_WG
// (a multiple of 8, at least HS/4): 256 on GPUs, 64 on lavapipe, whose barriers cost more than
// the work they spread.
// A long context splits each head's keys over several workgroups (y of the grid, `split_len`
// keys each from the window's first): each leaves its maximum, its sum and its unnormalized
// Σ exp(s − maximum)·v in `scores` after the NH × (past+1) scores, and
// attention_decode_combine forms the head's output from those, so that a context of
// thousands of tokens keeps more than NH workgroups busy.
// Where `append` says so, the token's own key and value (j = past) come apart from the cache,
// and the workgroup of the first query head of each KV head's group stores them into it: no
// copy before the launch, which would end its compute pass. Where `rot` says so, the
// workgroup rotates the query, and the token's own key, to position `past` as rope.wgsl does
// (its frequencies and factor in the params): no rope launch before it; the cache holds keys
// rotated.
// A batch's sequences may each have their own cache in one pair of buffers d_k, d_v (a
// server's requests): then one launch runs all their tokens, each row's in workgroups of its
// own (z), and d_seqs holds each row's position (its cache's tokens) and where its cache
// starts in d_k and d_v (in vec4s). A row splits its keys over fewer workgroups than the
// grid's y where another splits them over more: the workgroups past its own find no keys and
// write nothing.
@group(0) @binding(29) var<storage, read> d_q: array<vec4<f32>>;
@group(0) @binding(30) var<storage, read> d_k_new: array<vec4<f32>>;
@group(0) @binding(31) var<storage, read> d_v_new: array<vec4<f32>>;
@group(0) @binding(32) var<storage, read> d_seqs: array<vec2<u32>>;
@group(0) @binding(33) var<storage, read_write> d_scores: array<f32>;
@group(0) @binding(34) var<storage, read_write> d_out: array<vec4<f32>>;
@group(0) @binding(35) var<storage, read_write> d_k: array<vec4<f32>>;
@group(0) @binding(36) var<storage, read_write> d_v: array<vec4<f32>>;

// The token a decode workgroup runs: its row (in d_q, d_out and the new keys and values), its
// position, where its cache starts in d_k and d_v (vec4s) and its part of d_scores (floats),
// and its keys per split (0: none).
struct DecodeSeq {
    row: u32,
    past: u32,
    kv_at: u32,
    scores_at: u32,
    split_len: u32,
}

fn decode_seq(z: u32) -> DecodeSeq {
    if (p.batch_scratch == 0u) {
        return DecodeSeq(p.row, p.past, 0u, 0u, p.split_len);
    }
    let s = d_seqs[z];
    return DecodeSeq(z, s.x, s.y, z * p.batch_scratch, batch_split_len(s.x));
}

// A batch's row's keys per split, as attention.rs's decode_split makes them: none up to
// p.split_len keys (its DECODE_SPLIT_KEYS; 0: never split), else even parts of at most that
// many, at most DECODE_MAX_SPLITS (its own) of them.
const DECODE_MAX_SPLITS: u32 = 32u;
fn batch_split_len(past: u32) -> u32 {
    let keys = past + 1u - first_key(past);
    if (p.split_len == 0u || keys <= p.split_len) { return 0u; }
    let parts = min((keys + p.split_len - 1u) / p.split_len, DECODE_MAX_SPLITS);
    return (keys + parts - 1u) / parts;
}

// The workgroups a token's keys are split over: one, or a part per split_len of them.
fn decode_splits(sq: DecodeSeq) -> u32 {
    if (sq.split_len == 0u) { return 1u; }
    return (sq.past + 1u - first_key(sq.past) + sq.split_len - 1u) / sq.split_len;
}

override DECODE_WG: u32 = 256u;

// (scalars, so that invocations rotating neighbouring dims never write one vec4)
var<workgroup> d_q_head: array<f32, MAX_HS>;
var<workgroup> d_k_head: array<f32, MAX_HS>;
var<workgroup> d_max: array<f32, DECODE_WG>;
var<workgroup> d_sum: array<f32, DECODE_WG>;
var<workgroup> d_part: array<vec4<f32>, DECODE_WG>;

// (WGSL passes no pointers to workgroup memory: the staged heads are named by `on_k`.)
fn staged(on_k: bool, e: u32) -> f32 {
    if (on_k) { return d_k_head[e]; }
    return d_q_head[e];
}

fn set_staged(on_k: bool, e: u32, v: f32) {
    if (on_k) { d_k_head[e] = v; } else { d_q_head[e] = v; }
}

// Rope's rotation of the staged query (or key) by invocation `lid`: its pairs (e, e + rot/2)
// for e < rot/2, at position `pos`.
fn rotate_staged(on_k: bool, lid: u32, pos: u32) {
    let rh = p.rot / 2u;
    for (var e = lid; e < rh; e += DECODE_WG) {
        let r = rope_pair(staged(on_k, e), staged(on_k, e + rh), e, pos, 1.0);
        set_staged(on_k, e, r.x);
        set_staged(on_k, e + rh, r.y);
    }
}

// Dims 4·e .. 4·e + 3 of the staged query (or key).
fn staged4(on_k: bool, e: u32) -> vec4<f32> {
    return vec4<f32>(staged(on_k, 4u * e), staged(on_k, 4u * e + 1u), staged(on_k, 4u * e + 2u), staged(on_k, 4u * e + 3u));
}

// The staged query's score against key j of KV head kvh in the cache from `kv_at`: the
// token's own (staged) where `own`, which the workgroup stores into the cache where it
// `leads` its group.
fn decode_score(j: u32, kvh: u32, kv_at: u32, own: bool, leads: bool) -> f32 {
    let h4 = p.HS / 4u;
    let kb = kv_at + (j * p.NKV + kvh) * h4;
    var s = vec4<f32>();
    if (own) {
        for (var e = 0u; e < h4; e++) {
            let k = staged4(true, e);
            s += staged4(false, e) * k;
            if (leads) { d_k[kb + e] = k; }
        }
    } else {
        for (var e = 0u; e < h4; e++) { s += staged4(false, e) * d_k[kb + e]; }
    }
    return p.scale * (s.x + s.y + s.z + s.w);
}

// The `count` shares' (maximum, sum) from `at` on in workgroup memory as one: their
// maximum, and their sums rescaled to it and added in order.
fn decode_combine(at: u32, count: u32) -> vec2<f32> {
    var m = -3.0e38;
    for (var i = at; i < at + count; i++) { m = max(m, d_max[i]); }
    var l = 0.0;
    for (var i = at; i < at + count; i++) { l += d_sum[i] * exp(d_max[i] - m); }
    return vec2<f32>(m, l);
}

@compute @workgroup_size(DECODE_WG)
fn attention_decode(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let sq = decode_seq(wid.z);
    let h = wid.x;
    let h4 = p.HS / 4u;
    let group = p.NH / p.NKV;
    let kvh = h / group;
    // (the first query head of its KV head's group: it stores the token's key and value)
    let leads = h % group == 0u;
    let n = sq.past + 1u;
    let sb = sq.scores_at + h * n;
    let append = p.append != 0u;
    // the head's query, and the token's own key where it comes apart, staged (and rotated)
    for (var e = lid; e < p.HS; e += DECODE_WG) {
        d_q_head[e] = d_q[(sq.row * p.NH + h) * h4 + e / 4u][e % 4u];
        if (append) { d_k_head[e] = d_k_new[(sq.row * p.NKV + kvh) * h4 + e / 4u][e % 4u]; }
    }
    workgroupBarrier();
    if (p.rot != 0u) {
        rotate_staged(false, lid, sq.past);
        if (append) { rotate_staged(true, lid, sq.past); }
    }
    workgroupBarrier();
    // the workgroup's keys: the head's (those before the window left out), or its split's
    // (none where a batch's token splits its keys over fewer workgroups than the grid's y,
    // past its own: not `own_split`)
    let splits = decode_splits(sq);
    let own_split = wid.y < splits;
    var lo = first_key(sq.past);
    var hi = n;
    if (sq.split_len != 0u) {
        lo = min(lo + wid.y * sq.split_len, n);
        hi = min(lo + sq.split_len, n);
    }
    // this invocation's share of them: their scores, and their maximum and
    // Σ exp(s − maximum) in one pass
    var m = -3.0e38;
    var l = 0.0;
    for (var j = lo + lid; j < hi; j += DECODE_WG) {
        let s = decode_score(j, kvh, sq.kv_at, append && j == sq.past, leads);
        d_scores[sb + j] = s;
        let m_new = max(m, s);
        l = l * exp(m - m_new) + exp(s - m_new);
        m = m_new;
    }
    d_max[lid] = m;
    d_sum[lid] = l;
    workgroupBarrier();
    // the workgroup's: 8 shares at a time, then the 8 results by every invocation alike
    var ml = vec2<f32>();
    if (lid < DECODE_WG / 8u) { ml = decode_combine(8u * lid, 8u); }
    workgroupBarrier();
    if (lid < DECODE_WG / 8u) {
        d_max[lid] = ml.x;
        d_sum[lid] = ml.y;
    }
    workgroupBarrier();
    ml = decode_combine(0u, DECODE_WG / 8u);
    m = ml.x;
    l = ml.y;
    // (the scores other invocations wrote)
    storageBarrier();
    let chunks = DECODE_WG / h4;
    let c = lid / h4;
    let e = lid % h4;
    var acc = vec4<f32>();
    // the cache's values, then the token's own where it comes apart (by chunk 0 of the
    // workgroup whose keys end with it)
    let cached = select(n, sq.past, append);
    if (c < chunks) {
        for (var j = lo + c; j < min(cached, hi); j += chunks) {
            acc += exp(d_scores[sb + j] - m) * d_v[sq.kv_at + (j * p.NKV + kvh) * h4 + e];
        }
        if (cached < n && c == 0u && hi == n && own_split) {
            let v = d_v_new[(sq.row * p.NKV + kvh) * h4 + e];
            acc += exp(d_scores[sb + sq.past] - m) * v;
            if (leads) { d_v[sq.kv_at + (sq.past * p.NKV + kvh) * h4 + e] = v; }
        }
    }
    d_part[lid] = acc;
    workgroupBarrier();
    if (lid < h4 && own_split) {
        var sum = vec4<f32>();
        for (var i = 0u; i < chunks; i++) { sum += d_part[i * h4 + lid]; }
        if (sq.split_len == 0u) {
            d_out[(sq.row * p.NH + h) * h4 + lid] = sum / l;
        } else {
            let at = split_at(sq, h, wid.y, splits);
            if (lid == 0u) {
                d_scores[at] = m;
                d_scores[at + 1u] = l;
            }
            for (var i = 0u; i < 4u; i++) { d_scores[at + 2u + 4u * lid + i] = sum[i]; }
        }
    }
}

// Where split `s` of head h's `splits` leaves (maximum, sum, HS sums of values) in the
// token's part of `scores`.
fn split_at(sq: DecodeSeq, h: u32, s: u32, splits: u32) -> u32 {
    return sq.scores_at + p.NH * (sq.past + 1u) + (h * splits + s) * (p.HS + 2u);
}

// A head's output (a workgroup per head, and per row of a batch) from the splits
// attention_decode left, as many as it made of the token's keys: their sums of values
// rescaled to the largest maximum and added in order, over their sums of exponentials
// rescaled alike. Nothing for a token whose keys did not split (a batch's shorter ones).
@compute @workgroup_size(64)
fn attention_decode_combine(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let sq = decode_seq(wid.z);
    let h = wid.x;
    let h4 = p.HS / 4u;
    let splits = decode_splits(sq);
    if (lid >= h4 || sq.split_len == 0u) { return; }
    var m = -3.0e38;
    for (var s = 0u; s < splits; s++) { m = max(m, d_scores[split_at(sq, h, s, splits)]); }
    var l = 0.0;
    var acc = vec4<f32>();
    for (var s = 0u; s < splits; s++) {
        let at = split_at(sq, h, s, splits);
        let w = exp(d_scores[at] - m);
        l += w * d_scores[at + 1u];
        let v = at + 2u + 4u * lid;
        acc += w * vec4<f32>(d_scores[v], d_scores[v + 1u], d_scores[v + 2u], d_scores[v + 3u]);
    }
    d_out[(sq.row * p.NH + h) * h4 + lid] = acc / l;
}
