//! The lm_head in training: the final norm's output times the vocabulary in chunks of rows
//! (a chunk's logits within one binding), cross-entropy on each, and the input gradient back;
//! on the rows that have a target only, where some have none (a prompt's tokens). Also the
//! parts a vocabulary too large for one binding is split into (`lm_head_parts`: inference's
//! head too).

use super::TrainPass;
use crate::gpu::Arena;
use crate::model::forward::Model;
use crate::model::Config;
use crate::ops::cross_entropy::{cross_entropy_backward, cross_entropy_forward, IGNORE};
use crate::ops::embedding::{embedding_forward, TableRows};
use crate::ops::rmsnorm::{rmsnorm_backward, rmsnorm_forward};
use crate::{GpuBuffer, GpuContext, Result};

/// The head's per-token buffers (N rows each), which it reads and writes in chunks of R rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum HeadPart {
    /// (N, C) final norm output, the lm_head's input
    Xnf,
    /// (N) u32: the next token where it carries loss
    Targets,
    /// (N) ∂loss/∂(each token's NLL)
    Weights,
    /// (N, C) ∂loss/∂xnf; the layers' input-gradient scratch
    Dxn,
    /// (N) each token's NLL
    Losses,
    /// (M, C) where the head keeps M < N rows ([`HeadTokens`]): the kept rows of xnf,
    /// gathered; each chunk's input gradient then takes the place of its rows, to be
    /// scattered into dxn
    Kept,
}

impl HeadPart {
    pub(super) const COUNT: usize = 6;
    pub(super) const ALL: [HeadPart; HeadPart::COUNT] = [HeadPart::Xnf, HeadPart::Targets, HeadPart::Weights, HeadPart::Dxn, HeadPart::Losses, HeadPart::Kept];
    /// What the head's launches read, and what they write.
    const READ: [HeadPart; 3] = [HeadPart::Xnf, HeadPart::Targets, HeadPart::Weights];
    const WRITTEN: [HeadPart; 2] = [HeadPart::Dxn, HeadPart::Losses];
}

/// The [`HeadPart`]s as views of two arenas, so that each chunk of R rows binds its rows where
/// they lie (where they start at an offset the GPU can bind: R a multiple of 64 with the usual
/// 256-byte alignment) instead of copying them into the chunk's buffers and back: five copies
/// per chunk, 32 chunks in a step of 2,048 tokens, each copy ending the compute pass. What a
/// chunk's launches read (xnf, targets, weights) and what they write (dxn, losses) lie in
/// different buffers: a launch may not bind one buffer both read-only and read-write. The
/// kept rows, which the gather writes from xnf's and the scatter reads into dxn's, lie in a
/// third.
pub(super) struct HeadRows {
    read: Arena,
    written: Arena,
    kept: Arena,
}

impl HeadRows {
    pub(super) fn alloc(ctx: &GpuContext, sizes: &[usize; HeadPart::COUNT]) -> Result<Self> {
        let of = |parts: &[HeadPart]| parts.iter().map(|&p| sizes[p as usize]).collect::<Vec<_>>();
        Ok(HeadRows {
            read: ctx.alloc_arena(&of(&HeadPart::READ))?,
            written: ctx.alloc_arena(&of(&HeadPart::WRITTEN))?,
            kept: ctx.alloc_arena(&of(&[HeadPart::Kept]))?,
        })
    }

    /// The arena `part` lies in, and its index there.
    fn place(&self, part: HeadPart) -> (&Arena, usize) {
        if part == HeadPart::Kept {
            return (&self.kept, 0);
        }
        match HeadPart::READ.iter().position(|&p| p == part) {
            Some(i) => (&self.read, i),
            None => (&self.written, HeadPart::WRITTEN.iter().position(|&p| p == part).expect("read or written")),
        }
    }

    pub(super) fn get(&self, part: HeadPart) -> &GpuBuffer {
        let (arena, i) = self.place(part);
        &arena.views[i]
    }

    /// Rows r0..r0 + rows of `part` (`width` values each) for a chunk, which has `own` for
    /// them where the GPU cannot bind them where they start.
    fn chunk<'a>(&'a self, ctx: &GpuContext, part: HeadPart, r0: usize, rows: usize, width: usize, own: &'a GpuBuffer) -> ChunkRows<'a> {
        let (at, bytes) = ((4 * r0 * width) as u64, (4 * rows * width) as u64);
        let (arena, i) = self.place(part);
        let view = arena.sub_view(i, at, bytes, ctx.storage_offset_alignment(), "the head's rows").ok();
        ChunkRows { view, own, whole: &arena.views[i], at, bytes }
    }
}

/// A chunk's rows of one of the head's per-token buffers: a view of them, or the chunk's own
/// buffer, which they are copied into (an input) or out of (an output).
struct ChunkRows<'a> {
    view: Option<GpuBuffer>,
    own: &'a GpuBuffer,
    whole: &'a GpuBuffer,
    /// Where the rows lie in `whole`, and their length, in bytes.
    at: u64,
    bytes: u64,
}

impl ChunkRows<'_> {
    fn buf(&self) -> &GpuBuffer {
        self.view.as_ref().unwrap_or(self.own)
    }

    /// For rows the chunk reads: copied into its own buffer where there is no view.
    fn read(self, ctx: &GpuContext) -> Self {
        if self.view.is_none() {
            ctx.copy_region(self.whole, self.at, self.own, 0, self.bytes);
        }
        self
    }

    /// For rows the chunk wrote: copied back where there is no view.
    fn write_back(&self, ctx: &GpuContext) {
        if self.view.is_none() {
            ctx.copy_region(self.own, 0, self.whole, self.at, self.bytes);
        }
    }
}

/// The tokens of a micro-batch whose logits the head computes: every one, or, where some have
/// no target (prompt tokens, whose logits carry no loss and no gradient), only those that
/// have one, gathered into rows of their own ([`HeadPart::Kept`]). With a prompt twice as long
/// as its answer, that saves two thirds of the head's products, the largest of a small
/// model's (SmolLM2's 49,152 words by 576: a fifth of its training step's FLOPs).
pub(super) enum HeadTokens {
    All,
    /// The tokens with a target, in order: the head's rows.
    Kept(Vec<usize>),
}

impl HeadTokens {
    pub(super) fn of(targets: &[u32]) -> Self {
        let kept: Vec<usize> = (0..targets.len()).filter(|&i| targets[i] != IGNORE).collect();
        if kept.len() == targets.len() { HeadTokens::All } else { HeadTokens::Kept(kept) }
    }

    /// The head's rows for `n` tokens.
    pub(super) fn rows(&self, n: usize) -> usize {
        match self {
            HeadTokens::All => n,
            HeadTokens::Kept(kept) => kept.len(),
        }
    }

    /// Per head row, its token's value in `per_token`.
    pub(super) fn select<T: Copy>(&self, per_token: &[T]) -> Vec<T> {
        match self {
            HeadTokens::All => per_token.to_vec(),
            HeadTokens::Kept(kept) => kept.iter().map(|&i| per_token[i]).collect(),
        }
    }

    /// Per token of `n`, its head row's value in `per_row` (0 where it has none).
    pub(super) fn spread(&self, per_row: Vec<f32>, n: usize) -> Vec<f32> {
        match self {
            HeadTokens::All => per_row,
            HeadTokens::Kept(kept) => {
                let mut out = vec![0.0; n];
                for (&i, x) in kept.iter().zip(per_row) {
                    out[i] = x;
                }
                out
            }
        }
    }
}

/// Most bytes of a chunk's logits (and of their gradient).
const HEAD_CHUNK_BYTES: u64 = 128 << 20;
/// Most rows of a chunk: past it, fewer launches gain little.
const HEAD_CHUNK_ROWS: usize = 256;

/// R, the head's rows per chunk for micro-batches of `n` tokens and a vocabulary of `v`: as
/// many as fit HEAD_CHUNK_BYTES and one binding, at most HEAD_CHUNK_ROWS and `n`, in multiples
/// of 128 where that many fit, else of 64 (where a chunk's rows of the head's per-token
/// buffers start at offsets a launch can bind, [`HeadRows`]). 128 is the side of the GPUs'
/// wide tiles: Qwen2.5's 151,936 words a row fit 220 rows, and chunks of 192 had each product
/// compute a second row of tiles, half of it empty: a third more than the head's FLOPs. Each
/// chunk is four launches or so (the lm_head, cross-entropy, the input gradient and its
/// split's sum): SmolLM2 at 4 × 512 tokens takes 8 chunks, not 32.
pub(super) fn head_rows(n: usize, v: usize, binding_limit: u64) -> usize {
    let fit = (HEAD_CHUNK_BYTES.min(binding_limit) / (v as u64 * 4)) as usize;
    let rows = match fit {
        128.. => fit / 128 * 128,
        64.. => 64,
        _ => fit.max(1),
    };
    rows.min(HEAD_CHUNK_ROWS).min(n)
}

/// Rows per part of the lm_head split to fit `binding_limit` (as if in f32, the widest
/// format), and whether it is split.
pub(crate) fn lm_head_parts(cfg: &Config, binding_limit: u64) -> (usize, bool) {
    // parts of a multiple of 4 rows: the quantized input gradients read the rows as vec4
    let fit = (binding_limit / (cfg.hidden_size as u64 * 4)) as usize;
    let part_rows = if fit >= 4 { fit / 4 * 4 } else { fit }.min(cfg.vocab_size).max(1);
    (part_rows, part_rows < cfg.vocab_size)
}

impl TrainPass {
    /// Final norm, lm_head and cross-entropy in chunks of R rows, per-token losses into
    /// all_losses; with `backward`, dres = ∂loss/∂xs[L] for the token weights in `weights`.
    /// Each chunk binds its rows of the per-token buffers where they lie ([`HeadRows`]), or
    /// copies them through the chunk's own buffers where the GPU cannot bind them there.
    pub(super) fn head(&self, ctx: &GpuContext, model: &Model, n: usize, backward: bool) -> Result<()> {
        use HeadPart::*;
        let cfg = &model.cfg;
        let (c, v) = (cfg.hidden_size, cfg.vocab_size);
        let (s, h) = (&self.s, &self.head);
        let last = &self.xs[cfg.n_layers];
        // (without checkpointing, the last block's launch normed it: `chain`)
        if self.checkpointing {
            rmsnorm_forward(ctx, h.get(Xnf), &s.rstdf, last, &model.final_norm, n, c, cfg.rms_norm_eps)?;
        }
        let m = self.head_tokens.rows(n);
        // the rows the chunks read, and where they write their input gradient
        let (inputs, input_grads) = match self.head_tokens {
            HeadTokens::All => (Xnf, Dxn),
            HeadTokens::Kept(_) => (Kept, Kept),
        };
        if inputs == Kept && m > 0 {
            gather_rows(ctx, h.get(Kept), &s.kept_ids, h.get(Xnf), m, c, n)?;
        }
        for r0 in (0..m).step_by(self.rows) {
            let rows = self.rows.min(m - r0);
            let chunk = |part, width, own| h.chunk(ctx, part, r0, rows, width, own);
            let (targets, losses) = (chunk(Targets, 1, &s.row_targets).read(ctx), chunk(Losses, 1, &s.losses));
            model.head_logits(ctx, &s.logits, &s.vocab_part, chunk(inputs, c, &s.proj).read(ctx).buf(), rows)?;
            match backward {
                false => cross_entropy_forward(ctx, losses.buf(), &s.logits, targets.buf(), rows, v)?,
                true => {
                    let weights = chunk(Weights, 1, &s.row_weights).read(ctx);
                    cross_entropy_backward(ctx, losses.buf(), &s.dlogits, &s.logits, targets.buf(), weights.buf(), rows, v)?;
                    // ∂loss/∂(head input rows) into its rows (of the kept rows, in place of
                    // what the logits read)
                    let dxn = chunk(input_grads, c, &s.dtmp);
                    model.head_backward_input(ctx, dxn.buf(), &s.dlogits, &s.vocab_part, rows)?;
                    dxn.write_back(ctx);
                }
            }
            losses.write_back(ctx);
        }
        if backward {
            if input_grads == Kept {
                // tokens without a target get no gradient from the head
                ctx.zero(h.get(Dxn));
                gather_rows(ctx, h.get(Dxn), &s.kept_at, h.get(Kept), n, c, m)?;
            }
            rmsnorm_backward(ctx, &s.dres, h.get(Dxn), last, &model.final_norm, &s.rstdf, n, c)?;
        }
        Ok(())
    }
}

/// out(N, C) rows i = src[ids[i]] for each of the `n` ids that is below `src_rows` (others are
/// left as they are): the embedding lookup's kernel, with `src` as its table.
fn gather_rows(ctx: &GpuContext, out: &GpuBuffer, ids: &GpuBuffer, src: &GpuBuffer, n: usize, c: usize, src_rows: usize) -> Result<()> {
    embedding_forward(ctx, out, ids, src, n, c, src_rows, TableRows { first_row: 0, scale: 1.0 })
}

#[cfg(test)]
mod tests {
    use super::head_rows;

    #[test]
    fn head_chunks_take_whole_wide_tiles_of_rows() {
        let big = 2047 << 20;
        // SmolLM2 (fits 682 rows), Llama 3 (261), Qwen2.5 (220: 128, not 192), Gemma 3 (128)
        for (v, want) in [(49_152, 256), (128_256, 256), (151_936, 128), (262_144, 128)] {
            assert_eq!(head_rows(2048, v, big), want, "vocabulary {v}");
        }
        // fewer rows fit a small binding: 64, then as many as fit
        assert_eq!(head_rows(2048, 151_936, 64 << 20), 64);
        assert_eq!(head_rows(2048, 151_936, 16 << 20), 27);
        // never past the micro-batch
        assert_eq!(head_rows(100, 49_152, big), 100);
    }
}
