// Training attention as matmuls (software adapters, where the register matmul kernels run
// many times faster than attention.wgsl's per-row loops). The packed rows' sequences (runs of
// one segment id: runs holds (b, start, len) per run) are padded to TP rows each, and
// core/src/ops/attention_matmul.rs runs chunks of (run, KV head) pairs z = run·NKV + kvh,
// z0 ≤ z < z0 + pairs:
//   attention_gather:  x (B, T, heads, HS) → xc (pairs, G, TP, HS), the G heads of pair z
//                      (query heads kvh·G.., or G = 1 for keys and values); rows past the
//                      run's end are 0
//   attention_scatter: the inverse, padded rows dropped
//   attention_softmax: s (pairs, G·TP, TP) of scale·q·kᵀ → its causal (and windowed)
//                      softmax in place; stats.lse in attention.wgsl's (B, NH, T, 2) layout
//   attention_softmax_backward: s (scale·q·kᵀ again) → P, and dp → dS = P·(dP − dsum)·scale,
//                      with stats = (lse, dsum) from the forward and attention_backward_prep
// TP is the chunk's longest run rounded up to a multiple of 4 (the register matmul's vec4 rule);
// padded keys are masked like future ones, padded query rows get zeros.

struct Params {
    T: u32,
    TP: u32,
    NH: u32,
    NKV: u32,
    HS: u32,
    G: u32,      // heads per pair in the gathered tensor (gather, scatter)
    heads: u32,  // heads of the (B, T, heads, HS) tensor (gather, scatter)
    z0: u32,
    pairs: u32,
    scale: f32,
    window: u32,
}

// attention_gather and attention_scatter move vec4s (HS is a multiple of 4) from src to dst:
// gather from the (B, T, heads, HS) tensor into the chunk, scatter back.
@group(0) @binding(0) var<storage, read> m_runs: array<u32>;
@group(0) @binding(1) var<storage, read> m_src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> m_dst: array<vec4<f32>>;

@group(0) @binding(3) var<storage, read> f_runs: array<u32>;
@group(0) @binding(4) var<storage, read_write> f_s: array<f32>;
@group(0) @binding(5) var<storage, read_write> f_stats: array<f32>;

@group(0) @binding(6) var<storage, read> b_runs: array<u32>;
@group(0) @binding(7) var<storage, read> b_stats: array<f32>;
@group(0) @binding(8) var<storage, read_write> b_s: array<vec4<f32>>;
@group(0) @binding(9) var<storage, read_write> b_dp: array<vec4<f32>>;
@group(1) @binding(0) var<uniform> p: Params;

// vec4s in the chunk.
fn chunk_len() -> u32 {
    return p.pairs * p.G * p.TP * (p.HS / 4u);
}

// vec4 e of a (pairs, G, TP, HS) chunk: its vec4 in the (B, T, heads, HS) tensor, or -1 for
// a padded row.
fn source_of(e: u32) -> i32 {
    let h4 = p.HS / 4u;
    let row = e / h4;
    let zg = row / p.TP;
    let r = (p.z0 + zg / p.G) / p.NKV; // its run: (b, start, len) in m_runs
    let t = row % p.TP;
    if (t >= m_runs[3u * r + 2u]) { return -1; }
    let h = ((p.z0 + zg / p.G) % p.NKV) * p.G + zg % p.G;
    return i32(((m_runs[3u * r] * p.T + m_runs[3u * r + 1u] + t) * p.heads + h) * h4 + e % h4);
}

@compute @workgroup_size(64)
fn attention_gather(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = gid.x + gid.y * nwg.x * 64u;
    if (e >= chunk_len()) { return; }
    let src = source_of(e);
    m_dst[e] = select(vec4<f32>(), m_src[max(src, 0)], src >= 0);
}

@compute @workgroup_size(64)
fn attention_scatter(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = gid.x + gid.y * nwg.x * 64u;
    if (e >= chunk_len()) { return; }
    let dst = source_of(e);
    if (dst >= 0) { m_dst[dst] = m_src[e]; }
}

// Row r of a (pairs, G·TP, TP) score chunk: its run's z, query head h and position t in
// the run.
struct ScoreRow {
    run: u32,
    h: u32,
    t: u32,
}

fn score_row(r: u32) -> ScoreRow {
    let group = p.NH / p.NKV;
    let z = p.z0 + r / (p.TP * group);
    return ScoreRow(z / p.NKV, (z % p.NKV) * group + (r / p.TP) % group, r % p.TP);
}

// The first key a query at position t of its run sees.
fn first_key(t: u32) -> u32 {
    if (p.window == 0u || t < p.window) { return 0u; }
    return t + 1u - p.window;
}

// Index of (b, h, t) in stats, times 2.
fn stat(b: u32, h: u32, t: u32) -> u32 {
    return ((b * p.NH + h) * p.T + t) * 2u;
}

@compute @workgroup_size(64)
fn attention_softmax(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = gid.x + gid.y * nwg.x * 64u;
    if (r >= p.pairs * (p.NH / p.NKV) * p.TP) { return; }
    let row = score_row(r);
    let len = f_runs[3u * row.run + 2u];
    let base = r * p.TP;
    if (row.t >= len) {
        for (var j = 0u; j < p.TP; j++) { f_s[base + j] = 0.0; }
        return;
    }
    let lo = first_key(row.t);
    var m = -3.0e38;
    for (var j = lo; j <= row.t; j++) { m = max(m, f_s[base + j]); }
    var l = 0.0;
    for (var j = lo; j <= row.t; j++) { l += exp(f_s[base + j] - m); }
    let lse = m + log(l);
    for (var j = 0u; j < p.TP; j++) {
        var prob = 0.0;
        if (j >= lo && j <= row.t) { prob = exp(f_s[base + j] - lse); }
        f_s[base + j] = prob;
    }
    f_stats[stat(f_runs[3u * row.run], row.h, f_runs[3u * row.run + 1u] + row.t)] = lse;
}

// A vec4 of keys per invocation.
@compute @workgroup_size(64)
fn attention_softmax_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = gid.x + gid.y * nwg.x * 64u;
    let tp4 = p.TP / 4u;
    if (e >= p.pairs * (p.NH / p.NKV) * p.TP * tp4) { return; }
    let j = vec4<u32>(4u * (e % tp4)) + vec4<u32>(0u, 1u, 2u, 3u);
    let row = score_row(e / tp4);
    var prob = vec4<f32>();
    var ds = vec4<f32>();
    if (row.t < b_runs[3u * row.run + 2u]) {
        let st = stat(b_runs[3u * row.run], row.h, b_runs[3u * row.run + 1u] + row.t);
        let seen = (j >= vec4<u32>(first_key(row.t))) & (j <= vec4<u32>(row.t));
        prob = select(vec4<f32>(), exp(b_s[e] - b_stats[st]), seen);
        ds = prob * (b_dp[e] - b_stats[st + 1u]) * p.scale;
    }
    b_s[e] = prob;
    b_dp[e] = ds;
}
