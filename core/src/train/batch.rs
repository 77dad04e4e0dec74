//! Batching: each epoch visits the examples in an order shuffled by (seed, epoch); a
//! micro-batch's examples are concatenated into one padding-free row.

use super::data::Example;
use crate::model::backward::TokenBatch;
use crate::ops::cross_entropy::IGNORE;
use crate::rng::Rng;

/// The examples of every micro-batch of `epoch`, in order (the last one may be smaller).
pub fn epoch_batches(n_examples: usize, batch_size: usize, seed: u64, epoch: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..n_examples).collect();
    // Fisher–Yates with a generator that depends only on (seed, epoch), so a resumed run sees
    // the same order
    let mut rng = Rng::new(seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    order.chunks(batch_size.max(1)).map(<[usize]>::to_vec).collect()
}

/// The examples one after another, each attending only to itself (segment ids) with
/// positions from 0; a token's target is the next token of its example when that one
/// carries loss.
pub fn pack(examples: &[&Example]) -> TokenBatch {
    let mut b = TokenBatch::default();
    for (seg, ex) in examples.iter().enumerate() {
        let n = ex.tokens.len();
        b.tokens.extend(&ex.tokens);
        b.pos.extend(0..n as u32);
        b.seg.extend(std::iter::repeat_n(seg as u32, n));
        b.targets.extend((0..n).map(|t| if t + 1 < n && ex.loss[t + 1] { ex.tokens[t + 1] } else { IGNORE }));
    }
    b
}

/// The most tokens any `batch_size` examples can hold together.
pub fn max_batch_tokens(examples: &[Example], batch_size: usize) -> usize {
    let mut lens: Vec<usize> = examples.iter().map(|e| e.tokens.len()).collect();
    lens.sort_unstable_by(|a, b| b.cmp(a));
    lens.iter().take(batch_size.max(1)).sum()
}
