//! Each row's next token picked on the GPU from its logits, as the host's sampler picks it
//! (`sampling::pick_token`, this op's reference): decoding picks its tokens where the logits
//! are, and reads the tokens instead of the logits (model/gpu_picks.rs, a batched decode's rows).

use super::check_len;
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
    /// The sampler's seed, hashed (`sampling::seed_hash`).
    pub seed_hash: u32,
    /// The draw's index in its sequence (0: the first new token): each draw's noise is its own.
    pub draw: u32,
}

impl TokenPick {
    /// The most likely token (the seed and the draw play no part).
    pub const GREEDY: TokenPick = TokenPick { temperature: 0.0, top_k: 0, top_p: 1.0, seed_hash: 0, draw: 0 };
}

/// The rows one launch picks for.
const LAUNCH_ROWS: usize = 16;

/// sample.wgsl's Params.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    first: u32,
    _pad: [u32; 2],
    rows: [[u32; 4]; LAUNCH_ROWS],
    seeds: [[u32; 4]; LAUNCH_ROWS / 4],
}

/// out[r] = the token picked for row r of `logits` (picks.len() rows of `n`) as `picks[r]`
/// says, as an f32: a token id as `embedding::token_ids` writes them. A launch per 16 rows.
pub fn pick_tokens(ctx: &GpuContext, out: &GpuBuffer, logits: &GpuBuffer, picks: &[TokenPick], n: usize) -> Result<()> {
    let op = "pick_tokens";
    let rows = picks.len();
    ensure(n > 0 && n < 1 << 24, || format!("{op}: {n} logits a row, expected 1 to 2²⁴ (the index is written as an f32)"))?;
    ensure(rows > 0, || format!("{op}: no rows"))?;
    check_len(op, "logits", logits, rows * n)?;
    check_len(op, "out", out, rows)?;
    for (launch, picks) in picks.chunks(LAUNCH_ROWS).enumerate() {
        let mut params = Params { n: n as u32, first: (launch * LAUNCH_ROWS) as u32, ..bytemuck::Zeroable::zeroed() };
        for (r, pick) in picks.iter().enumerate() {
            params.rows[r] = [pick.temperature.to_bits(), pick.top_k, pick.top_p.to_bits(), pick.draw];
            params.seeds[r / 4][r % 4] = pick.seed_hash;
        }
        ctx.dispatch(&Kernel::new(Shader::Sample, "sample", 0), &[logits], &[out], &params, [picks.len() as u32, 1, 1])?;
    }
    Ok(())
}
