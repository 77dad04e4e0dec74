//! Several sequences decoded together (a server's requests): each keeps its own KV cache,
//! and a decode step runs one token of each through the layers as one matrix, so the weights
//! are read once per step for all of them instead of once per sequence. All of them run
//! under the adapter the model applies now.

use crate::model::block::{Attention, CachedSeq, SharedBatch};
use crate::model::forward::{BatchScratch, KvCache, Model, SharedCaches};
use crate::model::gpu_picks::UNREAD;
use crate::ops::attention::{decode_batch_table, decode_scratch_len, BatchSeq};
use crate::{Error, GpuContext, Result};
use std::sync::Arc;

impl Model {
    /// The longest context in tokens (the length of the caches it makes).
    pub fn context(&self) -> usize {
        self.max_seq
    }

    /// An empty KV cache of the model's context length, for one more sequence.
    pub fn new_cache(&self, ctx: &GpuContext) -> Result<KvCache> {
        KvCache::alloc(ctx, &self.cfg, self.max_seq)
    }

    /// `count` empty KV caches of the model's context length (a server's, one for each
    /// request it runs at once), each layer's keys of all of them in one buffer and its values
    /// in another where those fit one storage binding: then a batch of them attends in one
    /// launch per layer ([`Model::decode_batch`]); else apart.
    pub fn new_caches(&self, ctx: &GpuContext, count: usize) -> Result<Vec<KvCache>> {
        match KvCache::alloc_shared(ctx, &self.cfg, self.max_seq, count)? {
            Some(caches) => Ok(caches),
            None => (0..count).map(|_| self.new_cache(ctx)).collect(),
        }
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
        self.run_batch(ctx, caches, BatchTokens::Host(tokens))?;
        ctx.read_f32_prefix(&self.state.logits, tokens.len() * self.cfg.vocab_size).await
    }

    /// Runs [`Model::decode_batch`]'s step, leaving the logits (R, V) on the GPU.
    pub(crate) fn run_batch(&mut self, ctx: &GpuContext, caches: &mut [&mut KvCache], tokens: BatchTokens) -> Result<()> {
        let n = tokens.len();
        if n == 0 || n != caches.len() || n > self.max_batch() {
            return Err(Error::Shape(format!("a batched decode takes 1 to {} sequences with one token each, got {} sequences and {n} tokens", self.max_batch(), caches.len())));
        }
        for cache in caches.iter() {
            self.check_room(cache, 1)?;
        }
        let pos: Vec<u32> = caches.iter().map(|c| c.len() as u32).collect();
        let one_launch = self.share_attention(ctx, caches)?;
        let (held, s, scratch) = (&*caches, &self.state, self.batch_attention.as_ref());
        let attention = |i: usize| Attention::Batched {
            seqs: held.iter().map(|c| CachedSeq { k: &c.k[i], v: &c.v[i], past: c.len() }).collect(),
            scores: &s.scores,
            q_one: &s.decode_q,
            att_one: &s.decode_att,
            shared: one_launch.as_ref().zip(scratch).map(|((shared, seqs), scratch)| SharedBatch {
                k: &shared.k[i],
                v: &shared.v[i],
                seqs,
                table: &scratch.table,
                scores: &scratch.scores,
                per_row: scratch.per_row,
            }),
        };
        match tokens {
            BatchTokens::Host(ids) => self.upload_embeddings(ctx, &self.state.x, ids)?,
            BatchTokens::Picked(n) => self.look_up_on_gpu(ctx, &self.state.x, &self.state.picked, n)?,
        }
        self.run_layers(ctx, n, &pos, &attention)?;
        for (r, cache) in caches.iter_mut().enumerate() {
            cache.ids.push(match tokens {
                BatchTokens::Host(ids) => ids[r],
                BatchTokens::Picked(_) => UNREAD,
            });
        }
        self.lm_head_rows(ctx, 0, n)
    }

    /// Where `caches` share their buffers (made together by [`Model::new_caches`]), at the
    /// same place in every layer's: those buffers and each one's sequence, with the table of
    /// them written for this step's launches (and the scratch grown to the batch). None: their
    /// tokens attend one launch each.
    fn share_attention(&mut self, ctx: &GpuContext, caches: &[&mut KvCache]) -> Result<Option<(Arc<SharedCaches>, Vec<BatchSeq>)>> {
        let Some(shared) = caches.first().and_then(|c| c.shared.clone()) else { return Ok(None) };
        let at = |part: &crate::GpuBuffer, whole: &crate::GpuBuffer| ((part.offset() - whole.offset()) / 4) as usize;
        let mut seqs = Vec::with_capacity(caches.len());
        for c in caches {
            let first = at(&c.k[0], &shared.k[0]);
            let same_place = |parts: &[crate::GpuBuffer], wholes: &[Arc<crate::GpuBuffer>]| parts.iter().zip(wholes).all(|(p, w)| p.raw() == w.raw() && at(p, w) == first);
            if !c.shared.as_ref().is_some_and(|s| Arc::ptr_eq(s, &shared)) || !same_place(&c.k, &shared.k) || !same_place(&c.v, &shared.v) {
                return Ok(None);
            }
            seqs.push(BatchSeq { past: c.len(), at: first });
        }
        let (rows, per_row) = (caches.len(), decode_scratch_len(self.cfg.n_heads, self.cfg.head_size, self.max_seq));
        // (a scratch past one storage binding: a launch per token, each reusing one row's)
        if 4 * (rows * per_row) as u64 > ctx.max_bound_bytes() {
            return Ok(None);
        }
        if self.batch_attention.as_ref().is_none_or(|b| b.rows < rows) {
            self.batch_attention = Some(BatchScratch { rows, per_row, table: ctx.alloc_f32(2 * rows)?, scores: ctx.alloc_f32(rows * per_row)? });
        }
        let table = &self.batch_attention.as_ref().expect("made above").table;
        ctx.write_bytes(table, bytemuck::cast_slice(&decode_batch_table(&seqs)));
        Ok(Some((shared, seqs)))
    }
}

/// Where a batched step's tokens come from: the host, or the rows the GPU picked after the step
/// before (not yet read: the caches hold them as [`UNREAD`] until they are).
#[derive(Clone, Copy)]
pub(crate) enum BatchTokens<'a> {
    Host(&'a [u32]),
    Picked(usize),
}

impl BatchTokens<'_> {
    fn len(&self) -> usize {
        match self {
            BatchTokens::Host(ids) => ids.len(),
            BatchTokens::Picked(n) => *n,
        }
    }
}

/// Where `caches`' masks of seen tokens are parts of one buffer (made together): that buffer and
/// the word where each one's starts. None: each in a buffer of its own.
pub(crate) fn shared_masks(caches: &[&mut KvCache]) -> Option<(Arc<crate::GpuBuffer>, Vec<u32>)> {
    let whole = &caches.first()?.shared.as_ref()?.seen;
    let at = caches.iter().map(|c| (c.seen.raw() == whole.raw()).then(|| ((c.seen.offset() - whole.offset()) / 4) as u32));
    Some((Arc::clone(whole), at.collect::<Option<_>>()?))
}
