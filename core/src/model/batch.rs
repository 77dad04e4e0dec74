//! Several sequences decoded together (a server's requests): each keeps its own KV cache,
//! and a decode step runs one token of each through the layers as one matrix, so the weights
//! are read once per step for all of them instead of once per sequence. All of them run
//! under the adapter the model applies now.

use crate::model::block::{Attention, CachedSeq};
use crate::model::forward::{KvCache, Model};
use crate::{Error, GpuContext, Result};

impl Model {
    /// The longest context in tokens (the length of the caches it makes).
    pub fn context(&self) -> usize {
        self.max_seq
    }

    /// An empty KV cache of the model's context length, for one more sequence.
    pub fn new_cache(&self, ctx: &GpuContext) -> Result<KvCache> {
        KvCache::alloc(ctx, &self.cfg, self.max_seq)
    }

    /// Takes the model's own cache out, leaving one of a single token in its place: a server
    /// that keeps a cache per request holds it with the others ([`Model::swap_cache`]).
    pub fn take_cache(&mut self, ctx: &GpuContext) -> Result<KvCache> {
        let mut own = KvCache::alloc(ctx, &self.cfg, 1)?;
        self.swap_cache(&mut own);
        Ok(own)
    }

    /// Exchanges the model's own cache with `cache`: `forward` and [`generate`] then continue
    /// the sequence `cache` held (a server prefills a request's prompt this way).
    ///
    /// [`generate`]: crate::model::generate::generate
    pub fn swap_cache(&mut self, cache: &mut KvCache) {
        std::mem::swap(&mut self.cache, cache);
    }

    /// The most sequences one [`Model::decode_batch`] takes: the rows of the logits buffer.
    pub fn max_batch(&self) -> usize {
        self.logit_rows
    }

    /// Appends `tokens[r]` to the sequence in `caches[r]`, for every r at once, and returns
    /// the logits (R, V) after each.
    pub async fn decode_batch(&mut self, ctx: &GpuContext, caches: &mut [&mut KvCache], tokens: &[u32]) -> Result<Vec<f32>> {
        let n = tokens.len();
        if n == 0 || n != caches.len() || n > self.max_batch() {
            return Err(Error::Shape(format!("a batched decode takes 1 to {} sequences with one token each, got {} sequences and {n} tokens", self.max_batch(), caches.len())));
        }
        for cache in caches.iter() {
            self.check_room(cache, 1)?;
        }
        let pos: Vec<u32> = caches.iter().map(|c| c.len() as u32).collect();
        let (held, s): (&[&mut KvCache], _) = (caches, &self.state);
        let attention = |i: usize| Attention::Batched {
            seqs: held.iter().map(|c| CachedSeq { k: &c.k[i], v: &c.v[i], past: c.len() }).collect(),
            scores: &s.scores,
            q_one: &s.decode_q,
            att_one: &s.decode_att,
        };
        self.run_layers(ctx, tokens, &pos, &attention)?;
        for (cache, &t) in caches.iter_mut().zip(tokens) {
            cache.ids.push(t);
        }
        self.lm_head_rows(ctx, 0, n)?;
        ctx.read_f32_prefix(&self.state.logits, n * self.cfg.vocab_size).await
    }
}
