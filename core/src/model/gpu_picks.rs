//! Decoding that keeps the GPU busy. Picking a token on the host means reading the logits,
//! then recording and submitting the next token's launches while the GPU waits. Here the GPU
//! picks each token itself (sample.wgsl: the most likely, or the draw the host's sampler would
//! make) and looks it up, so the host submits a token's launches before it has read the token
//! before it: it reads each token while the GPU runs the next. Where the caller stops on a
//! token (end of sequence, a stop string), the token run after it speculatively is dropped
//! from the cache. A server's batch of sequences decodes the same way, a step at a time
//! ([`decode_batch_on_gpu`]), until one of them ends or the batch changes; where one ends,
//! the others keep the step run ahead.

use crate::gpu::PendingRead;
use crate::model::batch::{shared_masks, BatchTokens};
use crate::model::forward::{KvCache, Model};
use crate::ops::sample::{pick_tokens, SeenTokens, TokenPick};
use crate::{Error, GpuContext, Result};

/// A token picked on the GPU, its id not yet read.
struct Picked {
    read: PendingRead,
    /// Whether it was also run (appended to the cache, its logits computed).
    ran: bool,
}

/// The id a cache holds for a token that ran before the host read it, until it is read.
pub(crate) const UNREAD: u32 = u32::MAX;

impl Model {
    /// Whether decoding can pick tokens on the GPU and run one ahead here: the model looks
    /// tokens up on the GPU and the context lets it.
    pub fn decodes_ahead(&self, ctx: &GpuContext) -> bool {
        ctx.decode_ahead() && self.looks_up_on_gpu()
    }

    /// Picks the next token as `how` says from the logits on the GPU (the last token's) and,
    /// with `run`, runs it, all submitted; its id is read by [`Model::read_picked`]. The
    /// cache's mask of seen tokens must hold its tokens where `how` has a repetition penalty
    /// ([`Model::write_seen`], or the pick before this one, which ran).
    fn pick(&mut self, ctx: &GpuContext, how: TokenPick, run: bool) -> Result<Picked> {
        let s = &self.state;
        let seen = SeenTokens { masks: &self.cache.seen, at: &[0] };
        pick_tokens(ctx, &s.picked, &s.logits, 0, &[how], &seen, self.cfg.vocab_size)?;
        let read = ctx.read_later(&s.picked, 4);
        if run {
            self.look_up_on_gpu(ctx, &s.x, &s.picked, 1)?;
            self.run_cached(ctx, 1)?;
            self.cache.ids.push(UNREAD);
            self.lm_head_rows(ctx, 0, 1)?;
            ctx.flush();
        }
        Ok(Picked { read, ran: run })
    }

    /// The next token picked on the GPU as `how` says from the logits there (the last token's),
    /// read back: 4 bytes instead of the logits.
    pub async fn pick_now(&mut self, ctx: &GpuContext, how: TokenPick) -> Result<u32> {
        self.write_seen(ctx, &how);
        let picked = self.pick(ctx, how, false)?;
        self.read_picked(ctx, picked, 0).await
    }

    /// Writes the cache's mask of seen tokens from its ids where `how` has a repetition
    /// penalty (it reads them).
    fn write_seen(&self, ctx: &GpuContext, how: &TokenPick) {
        if how.repetition_penalty != 1.0 {
            self.cache.write_seen(ctx, self.cfg.vocab_size);
        }
    }

    /// Picks each row's next token from a batched step's logits as `picks` says (after its
    /// repetition penalty over the tokens its cache's mask marks), all submitted; the ids are
    /// read by [`read_picks`].
    fn pick_batch(&self, ctx: &GpuContext, caches: &[&mut KvCache], picks: &[TokenPick]) -> Result<PendingRead> {
        let (s, vocab) = (&self.state, self.cfg.vocab_size);
        match shared_masks(caches) {
            Some((masks, at)) => pick_tokens(ctx, &s.picked, &s.logits, 0, picks, &SeenTokens { masks: &masks, at: &at }, vocab)?,
            None => {
                for (r, (cache, pick)) in caches.iter().zip(picks).enumerate() {
                    pick_tokens(ctx, &s.picked, &s.logits, r, &[*pick], &SeenTokens { masks: &cache.seen, at: &[0] }, vocab)?;
                }
            }
        }
        Ok(ctx.read_later(&s.picked, 4 * picks.len() as u64))
    }

    /// The id of a token [`Model::pick`] picked, recorded in the cache where it ran at `at`.
    async fn read_picked(&mut self, ctx: &GpuContext, picked: Picked, at: usize) -> Result<u32> {
        let id = read_picks(ctx, picked.read).await?[0];
        if picked.ran {
            self.cache.ids[at] = id;
        }
        Ok(id)
    }
}

/// Decodes after the tokens the model last ran (a prompt's prefill: their logits on the GPU),
/// picking at most `max` tokens on the GPU, the first as `first` says and each after it as the
/// sampler's next draw. Each picked token goes to `accept`, in order: true
/// keeps it in the cache and goes on (the max-th is not run: decoding ends there), false ends
/// decoding before it. After it, on success or error, the cache holds the kept tokens and not
/// those run ahead of them. Where the cache has no room for an accepted token, the error is the one
/// [`Model::forward`] gives. Needs [`Model::decodes_ahead`].
pub async fn decode_on_gpu(ctx: &GpuContext, model: &mut Model, first: TokenPick, max: usize, accept: impl FnMut(u32) -> Result<bool>) -> Result<()> {
    let start = model.cache.len();
    let mut kept = 0;
    let run = pick_ahead(ctx, model, start, first, max, accept, &mut kept).await;
    model.rewind(start + kept);
    run
}

/// [`decode_on_gpu`]'s loop after the `start` tokens the cache held, counting the tokens it
/// keeps in `kept` as it goes (so that the cache can be rewound to them whatever ends it).
async fn pick_ahead(ctx: &GpuContext, model: &mut Model, start: usize, first: TokenPick, max: usize, mut accept: impl FnMut(u32) -> Result<bool>, kept: &mut usize) -> Result<()> {
    if max == 0 {
        return Ok(());
    }
    // runs the k-th token (from 1) where another may follow it and the cache has room
    let can_run = |model: &Model, k: usize| k < max && model.check_room(&model.cache, 1).is_ok();
    // how the k-th is picked: the sampler's draws in turn
    let how = |k: usize| TokenPick { draw: first.draw + (k - 1) as u32, ..first };
    // (each pick after the first sees the tokens before it: each marks its own, which runs)
    model.write_seen(ctx, &first);
    let mut pending = model.pick(ctx, how(1), can_run(model, 1))?;
    for k in 1..=max {
        // the next token is picked (and run) while this one is read, where this one ran
        let ahead = if pending.ran && k < max { Some(model.pick(ctx, how(k + 1), can_run(model, k + 1))?) } else { None };
        let ran = pending.ran;
        let id = model.read_picked(ctx, pending, start + k - 1).await?;
        if !accept(id)? || k == max {
            return Ok(());
        }
        if !ran {
            // no room for it: the error running it gives
            return model.check_room(&model.cache, 1);
        }
        *kept += 1;
        pending = ahead.expect("picked ahead of a token that ran");
    }
    Ok(())
}

/// The ids a pick launch wrote (as f32s, [`pick_tokens`]'s output), read: one sequence's
/// ([`Model::pick`]) or a batched step's ([`Model::pick_batch`]).
async fn read_picks(ctx: &GpuContext, read: PendingRead) -> Result<Vec<u32>> {
    let bytes = ctx.finish_read(read).await?;
    Ok(bytes.chunks_exact(4).map(|id| f32::from_le_bytes(id.try_into().expect("4 bytes")) as u32).collect())
}

/// Decodes the sequences in `caches` together (a server's requests, one token of each a step,
/// [`Model::decode_batch`]), each step's tokens picked on the GPU: the first step runs
/// `tokens` (one for each cache) and picks as `first` says, each after it the sampler's next
/// draws. `accept(r, id)` takes sequence r's pick, for each sequence in order after each
/// step, and says whether it goes on with it; false ends it before running the pick (it
/// ended, or the caller changes the batch). `ahead(k)`, asked after k steps, says whether
/// another may run before the host has read the k-th's picks (they go straight into its token
/// lookup on the GPU, where the model looks tokens up there); false, and decoding ends after
/// the k-th step's picks. Decoding also ends after a step where a sequence ended; where the
/// step ahead ran by then, those that go on keep its token (their pick it ran) and take its
/// picks too, once more through `accept`. After it, on success or error, each cache holds its
/// tokens before the last pick `accept` took for it, gone on with or not: the caller runs
/// those that go on next.
pub async fn decode_batch_on_gpu(
    ctx: &GpuContext,
    model: &mut Model,
    caches: &mut [&mut KvCache],
    tokens: &[u32],
    first: &[TokenPick],
    accept: impl FnMut(usize, u32) -> Result<bool>,
    ahead: impl FnMut(usize) -> bool,
) -> Result<()> {
    if first.len() != tokens.len() {
        return Err(Error::Shape(format!("a batched decode of {} sequences was given {} ways to pick their tokens", tokens.len(), first.len())));
    }
    let starts: Vec<usize> = caches.iter().map(|c| c.len()).collect();
    let mut kept = vec![0; caches.len()];
    let run = batch_ahead(ctx, model, caches, tokens, first, accept, ahead, &mut kept).await;
    for ((cache, start), kept) in caches.iter_mut().zip(starts).zip(kept) {
        cache.rewind(start + kept);
    }
    run
}

/// [`decode_batch_on_gpu`]'s loop, counting in `kept` each sequence's tokens its cache keeps
/// (so that they can be rewound to them whatever ends it): those run, but for the picks run
/// ahead that it did not go on with.
#[allow(clippy::too_many_arguments)]
async fn batch_ahead(
    ctx: &GpuContext,
    model: &mut Model,
    caches: &mut [&mut KvCache],
    tokens: &[u32],
    first: &[TokenPick],
    mut accept: impl FnMut(usize, u32) -> Result<bool>,
    mut ahead: impl FnMut(usize) -> bool,
    kept: &mut [usize],
) -> Result<()> {
    // how step k (from 1) picks: each sampler's draws in turn
    let how = |k: usize| -> Vec<TokenPick> { first.iter().map(|p| TokenPick { draw: p.draw + (k - 1) as u32, ..*p }).collect() };
    model.run_batch(ctx, caches, BatchTokens::Host(tokens))?;
    kept.fill(1);
    // (the host knows every token the caches hold here; from here on each pick marks its own)
    for (cache, pick) in caches.iter().zip(first) {
        if pick.repetition_penalty != 1.0 {
            cache.write_seen(ctx, model.cfg.vocab_size);
        }
    }
    let mut pending = model.pick_batch(ctx, caches, &how(1))?;
    let mut steps = 1;
    loop {
        // the next step runs while this one's picks are read
        let run_ahead = model.decodes_ahead(ctx) && caches.iter().all(|c| model.check_room(c, 1).is_ok()) && ahead(steps);
        let next = if run_ahead {
            model.run_batch(ctx, caches, BatchTokens::Picked(caches.len()))?;
            Some(model.pick_batch(ctx, caches, &how(steps + 1))?)
        } else {
            None
        };
        let ids = read_picks(ctx, pending).await?;
        if run_ahead {
            for (cache, &id) in caches.iter_mut().zip(&ids) {
                *cache.ids.last_mut().expect("the step ahead ran a token") = id;
            }
        }
        let mut going = Vec::with_capacity(ids.len());
        for (r, &id) in ids.iter().enumerate() {
            going.push(accept(r, id)?);
        }
        let Some(next) = next else { return Ok(()) };
        // the step ahead ran each sequence's pick: those that go on keep it
        for (kept, &go) in kept.iter_mut().zip(&going) {
            *kept += usize::from(go);
        }
        if going.iter().all(|&go| go) {
            pending = next;
            steps += 1;
            continue;
        }
        if going.iter().any(|&go| go) {
            // those that go on take their picks after it (the caller runs them)
            let ids = read_picks(ctx, next).await?;
            for (r, &id) in ids.iter().enumerate().filter(|&(r, _)| going[r]) {
                accept(r, id)?;
            }
        }
        return Ok(());
    }
}
