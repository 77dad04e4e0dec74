//! Picking the next token from logits: greedy, or a draw at a temperature from the top-k
//! tokens' nucleus (top-p), after a repetition penalty (HF's: positive logits of seen tokens
//! divided by it, negative ones multiplied). Seeded, so a seed gives the same text every run.
//!
//! The draw is the Gumbel-max trick: of the kept tokens, the one with the largest
//! (l − max)/T − ln(E), E a standard exponential hashed from (the seed, the draw's index, the
//! token id), is a draw from their softmax. Unlike the inverse CDF's one uniform, that needs no
//! sorted order or running sum, so the GPU draws what the host draws (sample.wgsl, whose
//! reference [`pick_token`] is): decoding picks its tokens there without reading the logits.

use crate::ops::cpu::lowbias32;
use crate::ops::sample::TokenPick;

#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// 0 picks the most likely token (greedy).
    pub temperature: f32,
    /// Keep the k most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches top_p (1: all).
    pub top_p: f32,
    /// 1: no penalty.
    pub repetition_penalty: f32,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams { temperature: 0.0, top_k: 0, top_p: 1.0, repetition_penalty: 1.0, seed: 0 }
    }
}

pub struct Sampler {
    params: SamplingParams,
    seed_hash: u32,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        Sampler { seed_hash: seed_hash(params.seed), params }
    }

    /// How draw `draw` of a sequence (0: its first new token) picks its token, for the GPU
    /// (which keeps the sequence's seen tokens itself: `ops::sample::SeenTokens`).
    pub fn pick(&self, draw: u32) -> TokenPick {
        let p = &self.params;
        TokenPick {
            temperature: p.temperature,
            top_k: p.top_k.min(u32::MAX as usize) as u32,
            top_p: p.top_p,
            repetition_penalty: p.repetition_penalty,
            seed_hash: self.seed_hash,
            draw,
        }
    }

    /// Draw `draw`'s token (0: the sequence's first new one); `seen` holds the ids the
    /// repetition penalty applies to.
    pub fn sample(&self, logits: &mut [f32], seen: &[u32], draw: u32) -> u32 {
        penalize(logits, seen, self.params.repetition_penalty);
        pick_token(logits, &self.pick(draw))
    }
}

/// HF's repetition penalty: the logits of the tokens in `seen` (each once) divided by
/// `penalty` where positive, else multiplied by it. Divided as multiplied by its reciprocal:
/// within an ulp of HF's quotient, and what every GPU computes too (sample.wgsl), where a
/// GPU's division may be off by more and turn a tie.
pub fn penalize(logits: &mut [f32], seen: &[u32], penalty: f32) {
    if penalty == 1.0 {
        return;
    }
    let inverse = 1.0 / penalty;
    let mut done = vec![false; logits.len()];
    for &id in seen {
        let i = id as usize;
        if i < logits.len() && !done[i] {
            done[i] = true;
            logits[i] *= if logits[i] > 0.0 { inverse } else { penalty };
        }
    }
}

/// A sampler's seed as the draws' noise takes it.
pub fn seed_hash(seed: u64) -> u32 {
    lowbias32(seed as u32 ^ lowbias32((seed >> 32) as u32))
}

/// The token `pick` picks from `logits` (its repetition penalty already applied: [`penalize`]):
/// the first most likely at temperature 0, else the Gumbel-max draw over the kept tokens, those
/// at or above a threshold: the k-th largest logit (top-k), then the least logit of the nucleus
/// (top-p). Ties at a threshold are all kept.
/// sample.wgsl does the same in f32 (here the nucleus' mass is summed in f64); they can differ
/// where two tokens' perturbed logits, or the nucleus' mass and top_p, agree to about 1e-6.
pub fn pick_token(logits: &[f32], pick: &TokenPick) -> u32 {
    let most = argmax(logits);
    let t = pick.temperature;
    if t <= 0.0 {
        return most;
    }
    let m = logits[most as usize];
    let k = pick.top_k as usize;
    let mut from = 0;
    if k > 0 && k < logits.len() {
        let mut keys: Vec<u32> = logits.iter().map(|&l| value_key(l)).collect();
        from = *keys.select_nth_unstable_by(k - 1, |a, b| b.cmp(a)).1;
    }
    // The kept token of the largest score, the first of equals. The most likely token's score
    // first: then a token whose logit alone is further below than any noise can lift it needs
    // no noise drawn (most of a vocabulary, where a few tokens are likely).
    let draw_key = draw_key(pick);
    let score = |i: usize, base: f32| base - exponential(draw_key, i as u32).ln();
    let mut best = (score(most as usize, 0.0), most as usize);
    // whether token i can still win (then it has been scored)
    let mut consider = |i: usize, l: f32| {
        let base = (l - m) / t;
        if base + MAX_NOISE < best.0 {
            return false;
        }
        let s = score(i, base);
        if s > best.0 || (s == best.0 && i < best.1) {
            best = (s, i);
        }
        true
    };
    if pick.top_p < 1.0 {
        // the nucleus in its order, most likely first, so the walk ends where no more can win
        let (mut order, least) = nucleus(logits, from, m, t, pick.top_p);
        for i in 0..order.keys.len() {
            let key = order.at(i);
            let l = logits[id_of(key) as usize];
            if value_key(l) < least || !consider(id_of(key) as usize, l) {
                break;
            }
        }
    } else {
        for (i, &l) in logits.iter().enumerate() {
            if value_key(l) >= from {
                consider(i, l);
            }
        }
    }
    best.1 as u32
}

/// More than the largest −ln(E) of `exponential` (16.64, at its smallest E).
const MAX_NOISE: f32 = 17.0;

/// The perturbed logit of token `id` that [`pick_token`] maximizes over the kept tokens (the
/// draw's scores: where a GPU's pick is not the host's, the two should agree to rounding).
pub fn draw_score(logits: &[f32], pick: &TokenPick, id: u32) -> f32 {
    let m = logits[argmax(logits) as usize];
    (logits[id as usize] - m) / pick.temperature - exponential(draw_key(pick), id).ln()
}

/// The hash a draw's noise starts from: its seed's and its index's.
pub(crate) fn draw_key(pick: &TokenPick) -> u32 {
    lowbias32(pick.seed_hash ^ lowbias32(pick.draw))
}

/// The nucleus among the logits at or above the key `from`: the fewest most likely (by logit,
/// then id) whose weight exp((l − m)/T) reaches top_p of theirs, at least one, and any as likely
/// as the least of them. Returned as those logits in that order (sorted as far as the nucleus
/// reaches) and the key of its least logit. Only as many are sorted as the nucleus reaches: a
/// whole vocabulary's sort took 2 ms a token for SmolLM2's 49,152 and 8 ms for Qwen's 151,936,
/// and sorting indices by the logits they point to took 3 to 4 times as long as the integer keys.
fn nucleus(logits: &[f32], from: u32, m: f32, t: f32, top_p: f32) -> (SortedPrefix, u32) {
    let weight = |key: u64| ((logits[id_of(key) as usize] - m) / t).exp() as f64;
    let keys: Vec<u64> = logits.iter().enumerate().filter(|(_, &l)| value_key(l) >= from).map(|(i, &l)| draw_order(l, i as u32)).collect();
    let target = top_p as f64 * keys.iter().map(|&k| weight(k)).sum::<f64>();
    let mut order = SortedPrefix { keys, sorted: 0 };
    let (mut acc, mut i) = (0.0, 0);
    loop {
        let key = order.at(i);
        acc += weight(key);
        i += 1;
        if acc >= target || i == order.keys.len() {
            let least = value_key(logits[id_of(key) as usize]);
            return (order, least);
        }
    }
}

/// A standard exponential for token `id` of the draw keyed `draw_key`, as sample.wgsl's
/// `exponential`: from 23 random bits u in (0, 1), −ln(u), and where u > 1/2 the same from
/// 1 − u (exact) through 2·atanh(z), z = (1 − u)/(1 + u): a GPU's ln(u) of u near 1 has an
/// absolute error that E, near 0 there, would not survive.
fn exponential(draw_key: u32, id: u32) -> f32 {
    let h = lowbias32(id ^ draw_key) >> 9;
    let u = (h as f32 + 0.5) * (1.0 / 8_388_608.0);
    if u <= 0.5 {
        return -u.ln();
    }
    let v = ((8_388_607 - h) as f32 + 0.5) * (1.0 / 8_388_608.0);
    let z = v / (2.0 - v);
    let z2 = z * z;
    2.0 * z * (1.0 + z2 * (1.0 / 3.0 + z2 * (1.0 / 5.0 + z2 * (1.0 / 7.0 + z2 * (1.0 / 9.0 + z2 * (1.0 / 11.0 + z2 * (1.0 / 13.0)))))))
}

/// A logit's place in f32's total order (`f32::total_cmp`) as an unsigned integer, smallest
/// first: the thresholds' keys, as sample.wgsl's `value_key`.
fn value_key(logit: f32) -> u32 {
    let bits = logit.to_bits();
    // negatives' bits flipped, positives' sign bit set
    if bits >> 31 == 1 {
        !bits
    } else {
        bits | 1 << 31
    }
}

/// A candidate's place in the nucleus' order as one integer, smallest first: by logit, highest
/// first (in f32's total order, as `f32::total_cmp`), then by id.
fn draw_order(logit: f32, id: u32) -> u64 {
    ((!value_key(logit) as u64) << 32) | id as u64
}

fn id_of(key: u64) -> u32 {
    key as u32
}

/// Candidates whose first `sorted` are in their final order, the rest not yet: `at` sorts
/// more (8 times as many each time, from 64) when it is asked past them.
struct SortedPrefix {
    keys: Vec<u64>,
    sorted: usize,
}

impl SortedPrefix {
    fn at(&mut self, i: usize) -> u64 {
        if i >= self.sorted {
            let end = (i + 1).max(8 * self.sorted).max(64).min(self.keys.len());
            let rest = &mut self.keys[self.sorted..];
            if end - self.sorted < rest.len() {
                rest.select_nth_unstable(end - self.sorted - 1);
            }
            self.keys[self.sorted..end].sort_unstable();
            self.sorted = end;
        }
        self.keys[i]
    }
}

pub fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn greedy_takes_the_largest() {
        let s = Sampler::new(SamplingParams::default());
        assert_eq!(s.sample(&mut [0.1, 3.0, -1.0, 3.0], &[], 0), 1);
    }

    #[test]
    fn repetition_penalty_can_change_the_choice() {
        let params = SamplingParams { repetition_penalty: 2.0, ..Default::default() };
        let s = Sampler::new(params);
        assert_eq!(s.sample(&mut [0.1, 3.0, -1.0, 2.0], &[1], 0), 3);
    }

    #[test]
    fn top_k_one_is_greedy_and_seed_and_draw_reproduce() {
        let params = SamplingParams { temperature: 1.0, top_k: 1, ..Default::default() };
        assert_eq!(Sampler::new(params).sample(&mut [0.1, 3.0, -1.0, 2.0], &[], 5), 1);
        let params = SamplingParams { temperature: 1.5, top_p: 0.9, seed: 7, ..Default::default() };
        let logits = [0.5f32, 0.4, 0.3, 0.2, 0.1, 0.0];
        let draws = |seed| {
            let s = Sampler::new(SamplingParams { seed, ..params.clone() });
            (0..20).map(|d| s.sample(&mut logits.clone(), &[], d)).collect::<Vec<_>>()
        };
        assert_eq!(draws(7), draws(7));
        assert_ne!(draws(7), draws(8));
        // seeds apart only in their high 32 bits draw apart too
        assert_ne!(draws(7), draws(7 | 1 << 32));
    }

    /// The kept tokens' probabilities, sorting every logit: the top k (and ties with the k-th),
    /// then the nucleus (and ties with its least), renormalized.
    fn kept_probabilities(logits: &[f32], t: f32, top_k: usize, top_p: f32) -> Vec<f64> {
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        let mut kept = order.len();
        if top_k > 0 && top_k < kept {
            let kth = logits[order[top_k - 1]];
            kept = order.iter().take_while(|&&i| logits[i] >= kth).count();
        }
        let m = logits[order[0]];
        let w: Vec<f64> = order.iter().map(|&i| ((logits[i] - m) / t).exp() as f64).collect();
        if top_p < 1.0 {
            let total: f64 = w[..kept].iter().sum();
            let (mut acc, mut n) = (0.0, 0);
            while n < kept && (n == 0 || acc < top_p as f64 * total) {
                acc += w[n];
                n += 1;
            }
            let least = logits[order[n - 1]];
            kept = order[..kept].iter().take_while(|&&i| logits[i] >= least).count();
        }
        let total: f64 = w[..kept].iter().sum();
        let mut probs = vec![0.0; logits.len()];
        for (j, &i) in order[..kept].iter().enumerate() {
            probs[i] = w[j] / total;
        }
        probs
    }

    #[test]
    fn draws_follow_the_kept_tokens_softmax() {
        let logits = [2.0f32, 1.5, 1.5, 0.0, -1.0, 3.0, -20.0, 0.7];
        for (t, top_k, top_p) in [(1.0, 0, 1.0), (0.5, 0, 1.0), (2.0, 3, 1.0), (1.0, 2, 1.0), (1.0, 0, 0.8), (0.7, 5, 0.9), (1.0, 0, 0.0)] {
            let want = kept_probabilities(&logits, t, top_k, top_p);
            let s = Sampler::new(SamplingParams { temperature: t, top_k, top_p, seed: 3, ..Default::default() });
            let draws = 40_000;
            let mut counts = vec![0usize; logits.len()];
            for d in 0..draws {
                counts[s.sample(&mut logits.clone(), &[], d) as usize] += 1;
            }
            for (i, (&c, &q)) in counts.iter().zip(&want).enumerate() {
                let f = c as f64 / draws as f64;
                // 5 standard deviations of a frequency, and none drawn outside the kept
                let sd = (q * (1.0 - q) / draws as f64).sqrt();
                assert!((f - q).abs() <= 5.0 * sd + 1e-9, "T {t}, top_k {top_k}, top_p {top_p}: token {i} drawn {f}, expected {q}");
            }
        }
    }

    #[test]
    fn equal_scores_go_to_the_first_id() {
        let pick = TokenPick { temperature: 1.0, seed_hash: seed_hash(1), ..TokenPick::GREEDY };
        let key = draw_key(&pick);
        // two ids of the same noise (23 bits: a collision among a few thousand ids)
        let mut seen = std::collections::HashMap::new();
        let (i, j) = (0..1u32 << 16).find_map(|id| seen.insert(lowbias32(id ^ key) >> 9, id).map(|first| (first as usize, id as usize))).expect("a collision");
        let mut logits = vec![-30.0; j + 1];
        logits[i] = 1.0;
        logits[j] = 1.0;
        assert_eq!(pick_token(&logits, &pick), i as u32);
        // in the nucleus' order too
        assert_eq!(pick_token(&logits, &TokenPick { top_p: 0.99, ..pick }), i as u32);
    }

    #[test]
    fn the_nucleus_threshold_is_the_sorted_walks() {
        let mut gen = Rng::new(11);
        for case in 0..300 {
            let v = [5, 64, 65, 600, 5000, 49152][case % 6];
            // peaked (a few large logits), flat, ties (logits from a few values), a sure token
            let logits: Vec<f32> = (0..v)
                .map(|i| match case % 4 {
                    0 => if i % 97 == 3 { 6.0 + 4.0 * gen.next_f64() as f32 } else { 10.0 * (gen.next_f64() as f32 - 0.5) },
                    1 => 0.1 * gen.next_f64() as f32,
                    2 => (gen.below(4) as f32) - 2.0,
                    _ => if i == v / 2 { 40.0 } else { gen.next_f64() as f32 },
                })
                .collect();
            let t = [0.3, 0.7, 1.0, 1.5][case % 4];
            let top_p = [0.9, 0.5, 0.999, 0.0, 0.3][(case / 3) % 5];
            let m = logits[argmax(&logits) as usize];
            let want = kept_probabilities(&logits, t, 0, top_p);
            let from = nucleus(&logits, 0, m, t, top_p).1;
            for (i, &l) in logits.iter().enumerate() {
                assert_eq!(value_key(l) >= from, want[i] > 0.0, "case {case} (T {t}, top_p {top_p}, {v} logits): logit {i}");
            }
        }
    }

    #[test]
    fn exponentials_keep_their_relative_precision() {
        // every 23-bit draw near u = 1 (E near 0), near 1/2, and a spread of the rest
        let draws = (0..4096u32).chain(0x3f_f000..0x40_1000).chain((0..8_388_608).step_by(997)).chain(8_384_512..8_388_608);
        let mut mean = (0.0, 0);
        for h in draws {
            let u = (h as f64 + 0.5) / 8_388_608.0;
            // a draw key making lowbias32(id ^ key) >> 9 = h for id 0: the hash inverted
            let e = exponential(unhash(h << 9), 0) as f64;
            let want = -u.ln();
            assert!(((e - want) / want).abs() < 5e-7, "u {u}: {e}, expected {want}");
            mean = (mean.0 + e, mean.1 + 1);
        }
        assert!(mean.1 > 20_000);
    }

    /// lowbias32's inverse.
    fn unhash(h: u32) -> u32 {
        let mut x = h;
        x ^= x >> 16;
        x = x.wrapping_mul(0x4302_1123); // 0x846ca68b⁻¹ mod 2³²
        x ^= (x >> 15) ^ (x >> 30);
        x = x.wrapping_mul(0x1d69_e2a5); // 0x7feb352d⁻¹ mod 2³²
        x ^ (x >> 16)
    }

    #[test]
    fn unhash_inverts_lowbias32() {
        for v in [0u32, 1, 12345, 0xdead_beef, u32::MAX] {
            assert_eq!(unhash(lowbias32(v)), v);
        }
    }

    #[test]
    fn draw_order_is_total_cmp_descending_then_id() {
        let values = [f32::NEG_INFINITY, -3.5, -1e-30, -0.0, 0.0, 1e-30, 2.0, 2.0, f32::INFINITY, f32::MAX, f32::MIN];
        for (i, &a) in values.iter().enumerate() {
            for (j, &b) in values.iter().enumerate() {
                let want = b.total_cmp(&a).then(i.cmp(&j));
                assert_eq!(draw_order(a, i as u32).cmp(&draw_order(b, j as u32)), want, "{a} (id {i}) against {b} (id {j})");
            }
        }
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        // probabilities ≈ 0.87, 0.12, 0.002...: top_p 0.5 keeps only the first
        let params = SamplingParams { temperature: 1.0, top_p: 0.5, seed: 3, ..Default::default() };
        let s = Sampler::new(params);
        for d in 0..50 {
            assert_eq!(s.sample(&mut [4.0, 2.0, -2.0, -3.0], &[], d), 0);
        }
    }
}
