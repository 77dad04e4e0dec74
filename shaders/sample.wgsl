// Each row's next token, picked from its N logits as the host's sampler picks it
// (model/sampling.rs, `Sampler::sample`): after a repetition penalty on the tokens its sequence
// has seen, the most likely at temperature 0, else a draw from softmax(logits / T) over the
// top-k tokens' nucleus (top-p). Written as an f32 (a token id as the lookups read it: exact
// below 2²⁴), and marked seen in the row's mask. Decoding picks its next token with it on the
// GPU, so the host records the token's launches before it has read the token
// (model/gpu_picks.rs), and a batched decode reads its rows' tokens instead of their logits.
//
// A workgroup per row. The draw is the Gumbel-max trick: the candidate with the largest
// (l − max)/T − ln(E), E a standard exponential hashed from (the seed, the draw's index, the
// token id), is a draw from the candidates' softmax. So no sort and no prefix sum: the kept set
// is every logit at or above a threshold, and each threshold (the k-th largest logit; the
// smallest logit whose nucleus reaches top_p of the candidates' mass) is found by a search over
// the logits' bits (`search`), each pass counting (or weighing) the logits above 8 probes.

struct Params {
    N: u32,
    // the launch's first row (a launch takes at most 16)
    first: u32,
    // −∞'s bits: WGSL has no literal for it, and a constant expression may not evaluate to
    // it (Tint, the browsers' compiler, rejects a constant bitcast of 0xff800000)
    neg_inf: u32,
    // row first + r: (temperature's bits, top_k (0: all), top_p's bits, the draw's key: its
    // seed and index hashed on the host)
    rows: array<vec4<u32>, 16>,
    // row r's repetition penalty (1: none) and its reciprocal, at [r / 4][r % 4]
    penalties: array<vec4<f32>, 4>,
    inverse_penalties: array<vec4<f32>, 4>,
    // the word of `seen` where row r's mask starts, at [r / 4][r % 4]
    seen_at: array<vec4<u32>, 4>,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
// each row's sequence's tokens so far: bit i % 32 of word i / 32 set where token i is among
// them (HF's repetition penalty applies to the prompt's and the generated tokens)
@group(0) @binding(2) var<storage, read_write> seen: array<u32>;
@group(1) @binding(0) var<uniform> p: Params;

const WG: u32 = 256u;
const PROBES: u32 = 8u;
var<workgroup> best_v: array<f32, WG>;
var<workgroup> best_i: array<u32, WG>;
var<workgroup> sums: array<array<f32, PROBES>, WG>;

// #include "pieces/lowbias32.wgsl"

// Logits an invocation loads together at each step of a pass: one workgroup reads a row (once
// to 25 times), and a GPU hides a load's latency only behind other loads in flight, so a load
// at a time would leave it waiting on each.
const UNROLL: u32 = 8u;

// This workgroup's row: its logits start at x[row], its mask at seen[mask], and seen tokens'
// logits are divided by `penalty` where positive (multiplied by `inverse`, which is exact
// everywhere, as on the host; a GPU's division need not be), else multiplied by it.
var<private> row: u32;
var<private> mask: u32;
var<private> penalty: f32;
var<private> inverse: f32;

// Logit `i` of the row (i < N) after the repetition penalty.
fn logit(i: u32) -> f32 {
    let l = x[row + i];
    if (penalty == 1.0 || ((seen[mask + i / 32u] >> (i % 32u)) & 1u) == 0u) {
        return l;
    }
    return l * select(penalty, inverse, l > 0.0);
}

// The logits at j, j + WG, …, j + 7·WG of the row (−∞ past its end).
fn load_step(j: u32) -> array<f32, UNROLL> {
    var v: array<f32, UNROLL>;
    for (var u = 0u; u < UNROLL; u++) {
        let at = j + u * WG;
        v[u] = select(bitcast<f32>(p.neg_inf), logit(min(at, p.N - 1u)), at < p.N);
    }
    return v;
}

// v's place in f32's total order as an unsigned integer (larger value, larger key).
fn value_key(v: f32) -> u32 {
    let b = bitcast<u32>(v);
    return select(b | 0x80000000u, ~b, (b >> 31u) == 1u);
}

// A standard exponential for token `id` of the draw whose hashed key is `draw_key`: from 23
// random bits u in (0, 1), −ln(u), and where u > 1/2 the same from 1 − u (exact) through
// 2·atanh(z), z = (1 − u)/(1 + u), whose series keeps E's relative error near f32's where
// ln(u) of u near 1 would lose it.
fn exponential(draw_key: u32, id: u32) -> f32 {
    let h = lowbias32(id ^ draw_key) >> 9u;
    let u = (f32(h) + 0.5) * (1.0 / 8388608.0);
    if (u <= 0.5) {
        return -log(u);
    }
    let v = (f32(8388607u - h) + 0.5) * (1.0 / 8388608.0);
    let z = v / (2.0 - v);
    let z2 = z * z;
    return 2.0 * z * (1.0 + z2 * (1.0 / 3.0 + z2 * (1.0 / 5.0 + z2 * (1.0 / 7.0 + z2 * (1.0 / 9.0 + z2 * (1.0 / 11.0 + z2 * (1.0 / 13.0)))))));
}

// whether (v, i) goes before (w, j): larger, or as large and earlier
fn before(v: f32, i: u32, w: f32, j: u32) -> bool {
    return v > w || (v == w && i < j);
}

// The index of the best of the invocations' (v, i) (by `before`), for every invocation.
fn best_index(lid: u32, v: f32, i: u32) -> u32 {
    best_v[lid] = v;
    best_i[lid] = i;
    for (var half = WG / 2u; half > 0u; half /= 2u) {
        workgroupBarrier();
        if (lid < half && before(best_v[lid + half], best_i[lid + half], best_v[lid], best_i[lid])) {
            best_v[lid] = best_v[lid + half];
            best_i[lid] = best_i[lid + half];
        }
    }
    // (uniform, so that the callers' barriers stay in uniform control flow)
    let best = workgroupUniformLoad(&best_i[0]);
    workgroupBarrier();
    return best;
}

// Each invocation's 8 partial sums added over the workgroup, for every invocation (uniform, so
// that the callers' barriers stay in uniform control flow).
fn workgroup_sums(lid: u32, s: array<f32, PROBES>) -> array<f32, PROBES> {
    sums[lid] = s;
    for (var half = WG / 2u; half > 0u; half /= 2u) {
        workgroupBarrier();
        if (lid < half) {
            for (var j = 0u; j < PROBES; j++) {
                sums[lid][j] += sums[lid + half][j];
            }
        }
    }
    let totals = workgroupUniformLoad(&sums[0]);
    workgroupBarrier();
    return totals;
}

// The probe j (1..8) of the keys (lo, hi]: spread evenly, the 8th at hi.
fn probe(lo: u32, hi: u32, j: u32) -> u32 {
    let span = hi - lo;
    return lo + (span / PROBES) * j + min(j, span % PROBES);
}

// The largest key t in [lo, hi] whose logits at or above it weigh at least `goal` (each
// weighs 1 where `count`, else exp((l − m)/T)), given that lo's do: 8 probes a pass narrow
// the keys to an eighth, so 32-bit keys take at most 11 passes.
fn search(lid: u32, count: bool, lo_key: u32, hi_key: u32, goal: f32, m: f32, t: f32) -> u32 {
    var lo = lo_key;
    var hi = hi_key;
    while (lo < hi) {
        var probes: array<u32, PROBES>;
        for (var j = 0u; j < PROBES; j++) {
            probes[j] = probe(lo, hi, j + 1u);
        }
        var s: array<f32, PROBES>;
        for (var i = lid; i < p.N; i += UNROLL * WG) {
            let step = load_step(i);
            for (var u = 0u; u < UNROLL; u++) {
                let l = step[u];
                let key = value_key(l);
                // (no probe is at or below lo; past the end: -inf, below any)
                if (i + u * WG < p.N && key > lo) {
                    var w = 1.0;
                    if (!count) {
                        w = exp((l - m) / t);
                    }
                    for (var j = 0u; j < PROBES; j++) {
                        if (key >= probes[j]) {
                            s[j] += w;
                        }
                    }
                }
            }
        }
        let totals = workgroup_sums(lid, s);
        // the last probe that still reaches the goal (they weigh less and less), and the
        // one after it, which does not
        var next_hi = hi;
        for (var j = PROBES; j > 0u; j--) {
            if (totals[j - 1u] >= goal) {
                lo = probes[j - 1u];
                break;
            }
            next_hi = probes[j - 1u] - 1u;
        }
        hi = next_hi;
    }
    return lo;
}

// The logits' total weight exp((l − m)/T) at or above the key `lowest`.
fn mass_from(lid: u32, lowest: u32, m: f32, t: f32) -> f32 {
    var s: array<f32, PROBES>;
    for (var i = lid; i < p.N; i += UNROLL * WG) {
        let step = load_step(i);
        for (var u = 0u; u < UNROLL; u++) {
            if (i + u * WG < p.N && value_key(step[u]) >= lowest) {
                s[0] += exp((step[u] - m) / t);
            }
        }
    }
    return workgroup_sums(lid, s)[0];
}

// The row's pick: its token id into out, and its bit into the mask (the token runs next, so a
// pick ahead of it sees it). By one invocation, after every read of the mask.
fn take(r: u32, token: u32) {
    out[p.first + r] = f32(token);
    seen[mask + token / 32u] |= 1u << (token % 32u);
}

@compute @workgroup_size(256)
fn sample(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let r = wid.x;
    row = (p.first + r) * p.N;
    mask = p.seen_at[r / 4u][r % 4u];
    penalty = p.penalties[r / 4u][r % 4u];
    inverse = p.inverse_penalties[r / 4u][r % 4u];
    let t = bitcast<f32>(p.rows[r].x);
    let top_k = p.rows[r].y;
    let top_p = bitcast<f32>(p.rows[r].z);
    let draw_key = p.rows[r].w;

    // the most likely token (an invocation past the end holds index N, which any goes before)
    var v = bitcast<f32>(p.neg_inf);
    var i = p.N;
    for (var j0 = lid; j0 < p.N; j0 += UNROLL * WG) {
        let step = load_step(j0);
        for (var u = 0u; u < UNROLL; u++) {
            let j = j0 + u * WG;
            if (j < p.N && (i == p.N || step[u] > v)) {
                v = step[u];
                i = j;
            }
        }
    }
    let most = best_index(lid, v, i);
    if (t <= 0.0) {
        if (lid == 0u) {
            take(r, most);
        }
        return;
    }
    // (its value as the reduction left it, loaded uniformly: the searches' bounds derive from
    // it and their loops hold barriers, and a value read through the private row, mask and
    // penalty would not count as uniform)
    let m = workgroupUniformLoad(&best_v[0]);
    let top = value_key(m);

    // the candidates: the logits at or above `lowest`
    var lowest = 0u;
    if (top_k > 0u && top_k < p.N) {
        lowest = search(lid, true, 0u, top, f32(top_k), m, t);
    }
    if (top_p < 1.0) {
        let mass = mass_from(lid, lowest, m, t);
        // The nucleus' least logit is at or above m + T·ln((1 − top_p)·mass / 2N): the
        // candidates below that weigh less than (1 − top_p)·mass / 2 together, so those above
        // it reach top_p of the mass with a margin no rounding of the sums closes. Searching
        // from there skips the keys of the unlikely logits (2 to 3 of 11 passes, where that
        // bound is positive).
        let floor = m + t * log((1.0 - top_p) * mass / (2.0 * f32(p.N)));
        if (floor > bitcast<f32>(p.neg_inf) && floor < m) {
            lowest = max(lowest, value_key(floor));
        }
        lowest = search(lid, false, lowest, top, top_p * mass, m, t);
    }

    // the draw: the candidate with the largest Gumbel-perturbed logit
    v = bitcast<f32>(p.neg_inf);
    i = p.N;
    for (var j0 = lid; j0 < p.N; j0 += UNROLL * WG) {
        let step = load_step(j0);
        for (var u = 0u; u < UNROLL; u++) {
            let j = j0 + u * WG;
            if (j < p.N && value_key(step[u]) >= lowest) {
                let score = (step[u] - m) / t - log(exponential(draw_key, j));
                if (i == p.N || score > v) {
                    v = score;
                    i = j;
                }
            }
        }
    }
    let picked = best_index(lid, v, i);
    if (lid == 0u) {
        take(r, picked);
    }
}
