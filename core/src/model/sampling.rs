//! Picking the next token from logits: greedy, or temperature with top-k / top-p, after a
//! repetition penalty (HF's: positive logits of seen tokens divided by it, negative ones
//! multiplied). Seeded, so a seed gives the same text every run.

use crate::rng::Rng;

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
    rng: Rng,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        Sampler { rng: Rng::new(params.seed), params }
    }

    /// Whether it picks the most likely token, unchanged: the logits' argmax, which the GPU
    /// can take itself (model/greedy.rs).
    pub fn is_greedy(&self) -> bool {
        self.params.temperature <= 0.0 && self.params.repetition_penalty == 1.0
    }

    /// The next token; `seen` holds the ids the repetition penalty applies to.
    pub fn sample(&mut self, logits: &mut [f32], seen: &[u32]) -> u32 {
        let p = &self.params;
        if p.repetition_penalty != 1.0 {
            let mut done = vec![false; logits.len()];
            for &id in seen {
                let i = id as usize;
                if i < logits.len() && !done[i] {
                    done[i] = true;
                    logits[i] = if logits[i] > 0.0 { logits[i] / p.repetition_penalty } else { logits[i] * p.repetition_penalty };
                }
            }
        }
        if p.temperature <= 0.0 {
            return argmax(logits);
        }
        // The candidates in the order the draw walks them: by logit, highest first (ties by id,
        // for reproducibility), as keys that compare as integers. Only as many are sorted as the
        // nucleus and the draw reach: a whole vocabulary's sort took 2 ms a token for SmolLM2's
        // 49,152 and 8 ms for Qwen's 151,936 (more than a GPU takes to decode the token), and
        // sorting indices by the logits they point to took 3 to 4 times as long as the keys.
        let logits: &[f32] = logits;
        let mut keys: Vec<u64> = logits.iter().enumerate().map(|(i, &l)| draw_order(l, i as u32)).collect();
        if p.top_k > 0 && p.top_k < keys.len() {
            keys.select_nth_unstable(p.top_k - 1);
            keys.truncate(p.top_k);
        }
        let max = logits[id_of(*keys.iter().min().expect("logits")) as usize];
        let weight = |key: u64| (((logits[id_of(key) as usize] - max) / p.temperature) as f64).exp();
        let sum: f64 = keys.iter().map(|&k| weight(k)).sum();
        let mut order = SortedPrefix { keys, sorted: 0 };
        // the nucleus: the fewest candidates whose probability reaches top_p, and its total
        let (keep, kept) = if p.top_p < 1.0 {
            let (mut acc, mut i) = (0.0, 0);
            // (at least one: a top_p of 0 keeps the most likely)
            while i < order.keys.len() && (i == 0 || acc < p.top_p as f64) {
                acc += weight(order.at(i)) / sum;
                i += 1;
            }
            (i, acc)
        } else {
            (order.keys.len(), 1.0)
        };
        let r = self.rng.next_f64();
        let mut acc = 0.0;
        for i in 0..keep {
            let key = order.at(i);
            let q = weight(key) / sum;
            acc += if p.top_p < 1.0 { q / kept } else { q };
            if r < acc {
                return id_of(key);
            }
        }
        id_of(order.at(keep - 1))
    }
}

/// A candidate's place in the draw's order as one integer, smallest first: by logit, highest
/// first (in f32's total order, as `f32::total_cmp`), then by id.
fn draw_order(logit: f32, id: u32) -> u64 {
    let bits = logit.to_bits();
    // f32's total order as an unsigned one: negatives' bits flipped, positives' sign bit set
    let ascending = if bits >> 31 == 1 { !bits } else { bits | 1 << 31 };
    ((!ascending as u64) << 32) | id as u64
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

    #[test]
    fn greedy_takes_the_largest() {
        let mut s = Sampler::new(SamplingParams::default());
        assert_eq!(s.sample(&mut [0.1, 3.0, -1.0, 2.9], &[]), 1);
    }

    #[test]
    fn repetition_penalty_can_change_the_choice() {
        let params = SamplingParams { repetition_penalty: 2.0, ..Default::default() };
        let mut s = Sampler::new(params);
        assert_eq!(s.sample(&mut [0.1, 3.0, -1.0, 2.0], &[1]), 3);
    }

    #[test]
    fn top_k_one_is_greedy_and_seed_reproduces() {
        let params = SamplingParams { temperature: 1.0, top_k: 1, ..Default::default() };
        let mut s = Sampler::new(params);
        assert_eq!(s.sample(&mut [0.1, 3.0, -1.0, 2.0], &[]), 1);
        let params = SamplingParams { temperature: 1.5, top_p: 0.9, seed: 7, ..Default::default() };
        let logits = [0.5f32, 0.4, 0.3, 0.2, 0.1, 0.0];
        let draw = |seed| {
            let mut s = Sampler::new(SamplingParams { seed, ..params.clone() });
            (0..20).map(|_| s.sample(&mut logits.clone(), &[])).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    /// The sampler as it was, sorting every candidate: the partial sorts must draw the same.
    fn sample_sorting_all(p: &SamplingParams, rng: &mut Rng, logits: &[f32]) -> u32 {
        let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
        idx.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]).then(a.cmp(&b)));
        if p.top_k > 0 {
            idx.truncate(p.top_k);
        }
        let max = logits[idx[0] as usize];
        let mut probs: Vec<f64> = idx.iter().map(|&i| (((logits[i as usize] - max) / p.temperature) as f64).exp()).collect();
        let sum: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|x| *x /= sum);
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            let keep = probs.iter().position(|&x| {
                acc += x;
                acc >= p.top_p as f64
            });
            probs.truncate(keep.map_or(probs.len(), |k| k + 1));
            let s: f64 = probs.iter().sum();
            probs.iter_mut().for_each(|x| *x /= s);
        }
        let r = rng.next_f64();
        let mut acc = 0.0;
        for (i, &q) in probs.iter().enumerate() {
            acc += q;
            if r < acc {
                return idx[i];
            }
        }
        idx[probs.len() - 1]
    }

    #[test]
    fn partial_sorts_draw_what_sorting_every_candidate_drew() {
        let mut gen = Rng::new(11);
        for case in 0..400 {
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
            let params = SamplingParams {
                temperature: [0.3, 0.7, 1.0, 1.5][case % 4],
                top_k: [0, 0, 1, 5, 50, 70][(case / 4) % 6],
                top_p: [1.0, 0.9, 0.5, 0.999, 0.0][(case / 3) % 5],
                repetition_penalty: 1.0,
                seed: case as u64,
            };
            let (mut sampler, mut rng) = (Sampler::new(params.clone()), Rng::new(params.seed));
            for draw in 0..8 {
                let want = sample_sorting_all(&params, &mut rng, &logits);
                assert_eq!(sampler.sample(&mut logits.clone(), &[]), want, "case {case} ({params:?}, {v} logits), draw {draw}");
            }
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
        let mut s = Sampler::new(params);
        for _ in 0..50 {
            assert_eq!(s.sample(&mut [4.0, 2.0, -2.0, -3.0], &[]), 0);
        }
    }
}
