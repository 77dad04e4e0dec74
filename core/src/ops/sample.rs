//! Each row's next token picked on the GPU from its logits, as the host's sampler picks it
//! (`Sampler::sample`: `sampling::penalize`, then `sampling::pick_token`, this op's reference):
//! decoding picks its tokens where the logits are, and reads the tokens instead of the logits
//! (model/gpu_picks.rs, a batched decode's rows).

use super::check_len;
use crate::model::sampling::draw_key;
use crate::error::ensure;
use crate::gpu::{Kernel, Shader};
use crate::{GpuBuffer, GpuContext, Result};

/// How one row's token is picked: a sampler's settings and which of its draws this is
/// (`Sampler::pick`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenPick {
    /// 0 (or below): the most likely token, the first of equals.
    pub temperature: f32,
    /// Keep the k most likely tokens, and any as likely as the k-th (0: all).
    pub top_k: u32,
    /// Keep the fewest most likely whose probability reaches top_p, and any as likely as the
    /// least of them (1: all).
    pub top_p: f32,
    /// Divides the positive logits of the tokens the row's sequence has seen by it and
    /// multiplies the others (1: none), before all else.
    pub repetition_penalty: f32,
    /// The sampler's seed, hashed (`sampling::seed_hash`).
    pub seed_hash: u32,
    /// The draw's index in its sequence (0: the first new token): each draw's noise is its own.
    pub draw: u32,
}

impl TokenPick {
    /// The most likely token (the seed and the draw play no part).
    pub const GREEDY: TokenPick = TokenPick { temperature: 0.0, top_k: 0, top_p: 1.0, repetition_penalty: 1.0, seed_hash: 0, draw: 0 };
}

/// The tokens each row's sequence has seen, for its repetition penalty: a mask of
/// [`seen_words`] words a row, bit i % 32 of word i / 32 set where token i is among them; row
/// r's from word `at[r]` of `masks`. A pick sets its token's bit (the token runs next).
pub struct SeenTokens<'a> {
    pub masks: &'a GpuBuffer,
    pub at: &'a [u32],
}

/// The words of a mask of seen tokens over a vocabulary of `n`.
pub fn seen_words(n: usize) -> usize {
    n.div_ceil(32)
}

/// The mask of `ids` over a vocabulary of `n` (ids past it are left out).
pub fn seen_mask(ids: &[u32], n: usize) -> Vec<u32> {
    let mut mask = vec![0u32; seen_words(n)];
    for &id in ids.iter().filter(|&&id| (id as usize) < n) {
        mask[id as usize / 32] |= 1 << (id % 32);
    }
    mask
}

/// The rows one launch picks for.
const LAUNCH_ROWS: usize = 16;

/// sample.wgsl's Params.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    first: u32,
    neg_inf: u32,
    _pad: u32,
    rows: [[u32; 4]; LAUNCH_ROWS],
    penalties: [[f32; 4]; LAUNCH_ROWS / 4],
    inverse_penalties: [[f32; 4]; LAUNCH_ROWS / 4],
    seen_at: [[u32; 4]; LAUNCH_ROWS / 4],
}

/// out[first + r] = the token picked for row first + r of `logits` (rows of `n`) as `picks[r]`
/// says, as an f32 (a token id as `embedding::token_ids` writes them), after the repetition
/// penalty over row r's mask in `seen`, whose bit of the token it then sets. A launch per 16
/// rows.
pub fn pick_tokens(ctx: &GpuContext, out: &GpuBuffer, logits: &GpuBuffer, first: usize, picks: &[TokenPick], seen: &SeenTokens, n: usize) -> Result<()> {
    let op = "pick_tokens";
    let rows = picks.len();
    ensure(n > 0 && n < 1 << 24, || format!("{op}: {n} logits a row, expected 1 to 2²⁴ (the index is written as an f32)"))?;
    ensure(rows > 0, || format!("{op}: no rows"))?;
    ensure(seen.at.len() == rows, || format!("{op}: {rows} rows but {} masks of seen tokens", seen.at.len()))?;
    check_len(op, "logits", logits, (first + rows) * n)?;
    check_len(op, "out", out, first + rows)?;
    let last_mask = seen.at.iter().max().map_or(0, |&at| at as usize);
    check_len(op, "seen", seen.masks, last_mask + seen_words(n))?;
    for (launch, (picks, seen_at)) in picks.chunks(LAUNCH_ROWS).zip(seen.at.chunks(LAUNCH_ROWS)).enumerate() {
        let first = (first + launch * LAUNCH_ROWS) as u32;
        let mut params = Params { n: n as u32, first, neg_inf: f32::NEG_INFINITY.to_bits(), ..bytemuck::Zeroable::zeroed() };
        for (r, (pick, &at)) in picks.iter().zip(seen_at).enumerate() {
            params.rows[r] = [pick.temperature.to_bits(), pick.top_k, pick.top_p.to_bits(), draw_key(pick)];
            params.penalties[r / 4][r % 4] = pick.repetition_penalty;
            params.inverse_penalties[r / 4][r % 4] = 1.0 / pick.repetition_penalty;
            params.seen_at[r / 4][r % 4] = at;
        }
        ctx.dispatch(&Kernel::new(Shader::Sample, "sample", 0), &[logits], &[out, seen.masks], &params, [picks.len() as u32, 1, 1])?;
    }
    Ok(())
}
