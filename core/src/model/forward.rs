//! The decoder on the GPU for inference: weights uploaded once, a run state sized for a
//! chunk of tokens, and a KV cache. `forward` pushes tokens through the layers; `logits`
//! and `score` turn the final hidden states into logits and log-likelihoods. An optional
//! LoRA adapter adds scale·(x·Aᵀ)·Bᵀ to the layers it adapts (unmerged, so the same GPU
//! copy is what training updates).

use crate::gpu::layout::{buffer_set, pooled_bytes};
use crate::gpu::{Arena, KernelPaths};
use crate::lora::gpu::{GpuAdapter, LoraUse, StackedLora, Stacking};
use crate::model::backward::lm_head_parts;
use crate::model::block::{block_forward, Attention, BlockBuffers, Chain, Fused, LoraDown, NextNorm};
use crate::lora::{Adapter, Target};
use crate::model::config::Config;
use crate::model::linear::{Linear, StackedParts};
use crate::model::weights::{HostLayer, HostWeights, Matrix, TensorSource, WeightFormat, WeightReader};
use crate::ops::block_copy::{block_copy, Columns};
use crate::ops::cross_entropy::{cross_entropy_forward, IGNORE};
use crate::ops::embedding::{token_ids, TableRows};
use crate::ops::lora::lora_up_term;
use crate::ops::matmul::{Accumulate, InputNorm, LowRankTerm, GEMV_ROWS};
use crate::ops::residual::bias_forward;
use crate::ops::sample::{seen_mask, seen_words};
use crate::quant::QuantFormat;
use crate::{Error, GpuBuffer, GpuContext, Result};
use std::sync::Arc;

pub(crate) struct GpuLayer {
    pub(crate) attn_norm: GpuBuffer, // (C)
    pub(crate) q: Linear,            // (NH·HS, C)
    pub(crate) k: Linear,            // (NKV·HS, C)
    pub(crate) v: Linear,            // (NKV·HS, C)
    pub(crate) q_bias: Option<GpuBuffer>,
    pub(crate) k_bias: Option<GpuBuffer>,
    pub(crate) v_bias: Option<GpuBuffer>,
    pub(crate) q_norm: Option<GpuBuffer>, // (HS) Qwen3
    pub(crate) k_norm: Option<GpuBuffer>, // (HS) Qwen3
    /// Whether the layer applies rope (not on SmolLM3's NoPE layers).
    pub(crate) rope: bool,
    pub(crate) o: Linear,            // (C, NH·HS)
    pub(crate) ffn_norm: GpuBuffer,  // (C)
    pub(crate) post_attn_norm: Option<GpuBuffer>, // (C) Gemma 3
    pub(crate) post_ffn_norm: Option<GpuBuffer>,  // (C) Gemma 3
    pub(crate) gate: Linear,         // (FF, C)
    pub(crate) up: Linear,           // (FF, C)
    pub(crate) down: Linear,         // (C, FF)
    /// q's, k's and v's weights stacked in one buffer (q, k and v above are views of their
    /// rows) and their biases likewise, where the three can share one (`Linear::upload_stacked`):
    /// one token's three projections as one matmul.
    pub(crate) qkv: Option<(Linear, Option<GpuBuffer>)>,
    /// gate's and up's stacked likewise: both and the activation in one launch when decoding on
    /// GPUs.
    pub(crate) gate_up: Option<Linear>,
}

buffer_set! {
    /// Activations for up to `chunk` tokens at a time.
    RunState / RunStateSizes {
        /// (T, C) residual stream
        x,
        /// (T, C) normed
        xn,
        /// (T)
        rstd,
        /// (T·NH) the q norm's 1/rms (Qwen3; else empty)
        rstd_q,
        /// (T·NKV) the k norm's 1/rms (Qwen3; else empty)
        rstd_k,
        /// (T, NH·HS), (T, NKV·HS): q and k after their per-head norms (Qwen3; else empty:
        /// the projections' outputs, `Model::qkv_out`, are q and k)
        q,
        k,
        /// (T, NH·HS)
        q_rot,
        /// (T, NKV·HS)
        k_rot,
        /// (T, NH·HS)
        att,
        /// (T, C) attention / MLP output before the residual add; the lm_head's input
        proj,
        /// (T, FF)
        h,
        /// (T) u32
        pos,
        /// (R, V) for R = logit_rows
        logits,
        /// (R) u32
        targets,
        /// (R)
        losses,
        /// (R, largest lm_head part) when the lm_head is split
        vocab_part,
        /// (NH, S) attention scores of one decoded token
        scores,
        /// (NH·HS) one sequence's query and attention output in a batched decode
        decode_q,
        decode_att,
        /// (R, padded to 4) the tokens greedy decoding picked on the GPU, as f32 ids (padded
        /// as the lookups read ids): one sequence's, or a batch's
        picked,
    }
}

impl GpuLayer {
    /// Block `i`'s weights on the GPU.
    fn upload(ctx: &GpuContext, cfg: &Config, i: usize, l: &HostLayer) -> Result<Self> {
        let upload_vec = |x: &Vec<f32>| ctx.upload_f32(x);
        // the vectors only some families have: biases, head norms, post-norms
        let optional = |v: &Option<Vec<f32>>| v.as_ref().map(|v| ctx.upload_f32(v)).transpose();
        let (qkv, [q, k, v]) = stacked(ctx, [&l.q, &l.k, &l.v])?;
        let (gate_up, [gate, up]) = stacked(ctx, [&l.gate, &l.up])?;
        // the stacked projection adds the biases as one: all three (packed likewise), or none
        let biases = match (&l.q_bias, &l.k_bias, &l.v_bias) {
            (Some(qb), Some(kb), Some(vb)) => ctx.upload_packed(&[qb, kb, vb].map(|b| bytemuck::cast_slice(b)))?,
            _ => None,
        };
        let (q_bias, k_bias, v_bias) = match &biases {
            Some(packed) => (Some(packed.view(0)), Some(packed.view(1)), Some(packed.view(2))),
            None => (optional(&l.q_bias)?, optional(&l.k_bias)?, optional(&l.v_bias)?),
        };
        let unbiased = l.q_bias.is_none() && l.k_bias.is_none() && l.v_bias.is_none();
        let qkv = match (qkv, biases) {
            (Some(w), None) if unbiased => Some((w, None)),
            (Some(w), Some(packed)) => Some((w, Some(packed.all()))),
            _ => None,
        };
        Ok(GpuLayer {
            attn_norm: upload_vec(&l.attn_norm)?,
            q,
            k,
            v,
            q_bias,
            k_bias,
            v_bias,
            q_norm: optional(&l.q_norm)?,
            k_norm: optional(&l.k_norm)?,
            rope: cfg.uses_rope(i),
            o: Linear::upload(ctx, &l.o)?,
            ffn_norm: upload_vec(&l.ffn_norm)?,
            post_attn_norm: optional(&l.post_attn_norm)?,
            post_ffn_norm: optional(&l.post_ffn_norm)?,
            gate,
            up,
            down: Linear::upload(ctx, &l.down)?,
            qkv,
            gate_up,
        })
    }

    /// inp·[W_q; W_k; W_v]ᵀ (+ the biases): the three projections of `n` tokens in one
    /// matmul, where the layer holds them stacked (else an error), into `out`; with `norm`, of
    /// inp's rows normed in the same launch (1 to 16 rows, on GPUs; out in blocks takes it);
    /// with `term`, plus the adapter's q, k and v (a term over the stacked rows).
    pub(crate) fn qkv_forward(&self, ctx: &GpuContext, out: QkvOut, inp: &GpuBuffer, n: usize, norm: Option<InputNorm>, term: Option<LowRankTerm>) -> Result<()> {
        let Some((w, bias)) = &self.qkv else {
            return Err(Error::Shape("q, k and v are not stacked in this layer".into()));
        };
        let out = match out {
            QkvOut::Row(out) => out,
            QkvOut::Blocks(parts) => {
                let targets = [Target::Q, Target::K, Target::V];
                let widths = targets.map(|t| self.linear(t).shape().0);
                let (Some((whole, blocks)), Some(norm)) = (parts.blocks(&widths), norm) else {
                    return Err(Error::Shape("q, k and v in blocks: parts of one buffer, and the launch that norms the input".into()));
                };
                w.normed_forward(ctx, &whole, Some(blocks), inp, n, norm, term)?;
                for ((t, part), width) in targets.into_iter().zip(&parts.views).zip(widths) {
                    if let Some(b) = self.bias(t) {
                        bias_forward(ctx, part, b, n, width)?;
                    }
                }
                return Ok(());
            }
        };
        match norm {
            Some(norm) => w.normed_forward(ctx, out, None, inp, n, norm, term)?,
            None => w.forward(ctx, out, inp, n, term)?,
        }
        match bias {
            Some(b) => bias_forward(ctx, out, b, n, w.shape().0),
            None => Ok(()),
        }
    }

    /// The layer's stacked weight over `targets` (q, k, v; gate, up) where it has one.
    pub(crate) fn stacked(&self, targets: &[Target]) -> Option<&Linear> {
        match targets {
            [Target::Q, Target::K, Target::V] => self.qkv.as_ref().map(|(w, _)| w),
            [Target::Gate, Target::Up] => self.gate_up.as_ref(),
            _ => None,
        }
    }

    /// The forward of `targets` (q, k, v; gate, up) for `n` tokens as one launch through the
    /// layer's stacked weight, each target's output (and bias) into its part of `out`, with
    /// the term `lora` records where it is given: false where that cannot run here (no stacked
    /// weight, kernels that write no blocks, parts apart), and nothing was recorded.
    pub(crate) fn stacked_forward(&self, ctx: &GpuContext, targets: &[Target], out: &StackedParts, inp: &GpuBuffer, n: usize, lora: Option<&LoraDown>) -> Result<bool> {
        let widths: Vec<usize> = targets.iter().map(|&t| self.linear(t).shape().0).collect();
        let (Some(w), Some((whole, blocks))) = (self.stacked(targets).filter(|w| w.takes_output_blocks(ctx, n)), out.blocks(&widths)) else {
            return Ok(false);
        };
        let term = lora.map(|down| down(inp)).transpose()?;
        w.forward_blocked(ctx, &whole, blocks, inp, n, term)?;
        for ((&target, part), &width) in targets.iter().zip(&out.views).zip(&widths) {
            if let Some(b) = self.bias(target) {
                bias_forward(ctx, part, b, n, width)?;
            }
        }
        Ok(true)
    }

    /// `t`'s bias, where it has one (q, k and v: Qwen2's).
    fn bias(&self, t: Target) -> Option<&GpuBuffer> {
        match t {
            Target::Q => self.q_bias.as_ref(),
            Target::K => self.k_bias.as_ref(),
            Target::V => self.v_bias.as_ref(),
            _ => None,
        }
    }

    pub(crate) fn linear(&self, t: Target) -> &Linear {
        match t {
            Target::Q => &self.q,
            Target::K => &self.k,
            Target::V => &self.v,
            Target::O => &self.o,
            Target::Gate => &self.gate,
            Target::Up => &self.up,
            Target::Down => &self.down,
            // the base weights of a fused layer are held split; only adapters are fused
            Target::Qkv | Target::GateUp => unreachable!("{t:?}: the block projects the parts"),
        }
    }

    /// out(n, out) = beta·out + alpha·(inp·Wᵀ (+ the term)) (+ bias, Qwen2's q/k/v) of the
    /// frozen weight of `t`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn base_forward(&self, ctx: &GpuContext, t: Target, out: &GpuBuffer, inp: &GpuBuffer, n: usize, acc: Accumulate, term: Option<LowRankTerm>) -> Result<()> {
        let lin = self.linear(t);
        lin.forward_into(ctx, out, inp, n, acc, term)?;
        match self.bias(t) {
            Some(b) => bias_forward(ctx, out, b, n, lin.shape().0),
            None => Ok(()),
        }
    }
}

/// `parts` (sharing an input) stacked in one buffer where they can be (`Linear::upload_stacked`),
/// and each part as a weight of its own: a view of the stack's rows, or uploaded alone.
fn stacked<const N: usize>(ctx: &GpuContext, parts: [&Matrix; N]) -> Result<(Option<Linear>, [Linear; N])> {
    let (whole, each) = match Linear::upload_stacked(ctx, &parts)? {
        Some((whole, views)) => (Some(whole), views),
        None => (None, parts.iter().map(|m| Linear::upload(ctx, m)).collect::<Result<Vec<_>>>()?),
    };
    Ok((whole, each.try_into().unwrap_or_else(|_| unreachable!("one weight per part"))))
}

/// Where [`GpuLayer::qkv_forward`] writes: one token's q, k and v one after another (a
/// buffer of which the block's q, k and v are views), or each part of a few tokens' in its
/// own buffer of `parts` (the matrix-vector launch writing its output in blocks).
#[derive(Clone, Copy)]
pub(crate) enum QkvOut<'a> {
    Row(&'a GpuBuffer),
    Blocks(&'a StackedParts),
}

/// A buffer for one token's q, k and v, one after another, and a view of each: None where a
/// part would start at an offset the GPU cannot bind.
fn one_token_qkv(ctx: &GpuContext, cfg: &Config) -> Result<Option<(GpuBuffer, [GpuBuffer; 3])>> {
    let (q, kv) = (vec![0; 4 * cfg.q_dim()], vec![0; 4 * cfg.kv_dim()]);
    Ok(ctx.upload_packed(&[&q, &kv, &kv])?.map(|packed| (packed.all(), [packed.view(0), packed.view(1), packed.view(2)])))
}

pub struct KvCache {
    pub(crate) k: Vec<GpuBuffer>, // L × (S, NKV·HS)
    pub(crate) v: Vec<GpuBuffer>, // L × (S, NKV·HS)
    /// The ids of the tokens it holds (what `forward` ran since the last reset).
    pub(crate) ids: Vec<u32>,
    /// Those tokens as a mask over the vocabulary, for a repetition penalty applied on the GPU
    /// (`ops::sample::SeenTokens`): written from `ids` before the GPU picks with one, then kept
    /// by the picks themselves while decoding runs ahead.
    pub(crate) seen: GpuBuffer,
    /// S: the most tokens it can hold.
    pub capacity: usize,
    /// The buffers it shares with other caches (`k` and `v` are views of their parts), where
    /// it was made with them ([`Model::new_caches`](crate::model::Model::new_caches)).
    pub(crate) shared: Option<Arc<SharedCaches>>,
}

/// Caches of one length made together: each layer's keys of all of them in one buffer, and
/// its values in another, so that one launch attends over all of them.
pub(crate) struct SharedCaches {
    pub k: Vec<Arc<GpuBuffer>>,
    pub v: Vec<Arc<GpuBuffer>>,
    /// Their masks of seen tokens, so that one launch picks all their next tokens.
    pub seen: Arc<GpuBuffer>,
}

impl KvCache {
    /// An empty cache of `capacity` tokens for a model of `cfg`.
    pub(crate) fn alloc(ctx: &GpuContext, cfg: &Config, capacity: usize) -> Result<Self> {
        let layer = || ctx.alloc_f32(capacity * cfg.kv_dim());
        Ok(KvCache {
            k: (0..cfg.n_layers).map(|_| layer()).collect::<Result<_>>()?,
            v: (0..cfg.n_layers).map(|_| layer()).collect::<Result<_>>()?,
            ids: Vec::new(),
            seen: ctx.alloc_f32(seen_words(cfg.vocab_size))?,
            capacity,
            shared: None,
        })
    }

    /// `count` empty caches of `capacity` tokens sharing one buffer per layer for keys and
    /// one for values (each cache's part aligned for binding alone); None where fewer than two,
    /// or where those buffers would not fit one storage binding.
    pub(crate) fn alloc_shared(ctx: &GpuContext, cfg: &Config, capacity: usize, count: usize) -> Result<Option<Vec<Self>>> {
        let len = capacity * cfg.kv_dim();
        if count < 2 || (4 * len as u64).next_multiple_of(ctx.storage_offset_alignment()) * count as u64 > ctx.max_bound_bytes() {
            return Ok(None);
        }
        let layers = || (0..cfg.n_layers).map(|_| ctx.alloc_arena(&vec![len; count])).collect::<Result<Vec<_>>>();
        let (k, v) = (layers()?, layers()?);
        let seen = ctx.alloc_arena(&vec![seen_words(cfg.vocab_size); count])?;
        // (an Arc keeps caches Send natively, as arenas; on the web wgpu's buffers are not Send)
        #[allow(clippy::arc_with_non_send_sync)]
        let shared = Arc::new(SharedCaches {
            k: k.iter().map(|a| Arc::clone(&a.whole)).collect(),
            v: v.iter().map(|a| Arc::clone(&a.whole)).collect(),
            seen: Arc::clone(&seen.whole),
        });
        let caches = (0..count)
            .map(|c| KvCache {
                k: k.iter().map(|a| a.view(c)).collect(),
                v: v.iter().map(|a| a.view(c)).collect(),
                ids: Vec::new(),
                seen: seen.view(c),
                capacity,
                shared: Some(Arc::clone(&shared)),
            })
            .collect();
        Ok(Some(caches))
    }

    /// Bytes of GPU memory its keys and values take.
    pub fn bytes(&self) -> u64 {
        self.k.iter().chain(&self.v).map(|b| b.len_bytes()).sum()
    }

    /// Tokens it holds.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Keeps the first `len` tokens (at most those held).
    pub fn rewind(&mut self, len: usize) {
        self.ids.truncate(len);
    }

    /// Writes its mask of seen tokens from the ids it holds (all read: none picked ahead).
    pub(crate) fn write_seen(&self, ctx: &GpuContext, vocab: usize) {
        ctx.write_bytes(&self.seen, bytemuck::cast_slice(&seen_mask(&self.ids, vocab)));
    }

    /// How many leading tokens of `tokens` it already holds.
    pub fn cached_prefix(&self, tokens: &[u32]) -> usize {
        self.ids.iter().zip(tokens).take_while(|(a, b)| a == b).count()
    }
}

/// Sizes that fix what [`Model::new`] allocates.
#[derive(Clone, Copy, Debug)]
pub struct ModelOptions {
    /// Tokens per forward call (prefill runs in chunks of this).
    pub chunk: usize,
    /// The KV cache's length: the longest context.
    pub max_seq: usize,
    /// Split the lm_head into row parts no larger than this many bytes (None: the adapter's
    /// storage binding limit).
    pub max_binding: Option<u64>,
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions { chunk: 256, max_seq: 2048, max_binding: None }
    }
}

pub struct Model {
    pub cfg: Config,
    /// The token embedding, where it stays on the host (a lookup needs only T rows of it):
    /// None where the tied lm_head holds it on the GPU, which looks tokens up there.
    pub(crate) embed: Option<Matrix>,
    pub(crate) layers: Vec<GpuLayer>,
    pub(crate) final_norm: GpuBuffer,
    /// (first row, part): the lm_head in row parts that each fit one storage binding.
    pub(crate) lm_head: Vec<(usize, Linear)>,
    /// The largest number of bytes one storage binding may hold.
    pub(crate) binding_limit: u64,
    pub adapter: Option<GpuAdapter>,
    pub(crate) state: RunState,
    /// A chunk's q, k and v as projected (before q's and k's per-head norms), and its gate and
    /// up, each in one buffer: one tiled launch through the layer's stacked weights writes
    /// them all (`GpuLayer::stacked_forward`).
    qkv_out: StackedParts,
    gate_up_out: StackedParts,
    /// x·Aᵀ of the adapted layer being projected, or of the targets one launch projects
    /// together (their parts in slot order).
    lora_h: Arena,
    pub cache: KvCache,
    chunk: usize,
    /// The KV caches' length: the longest context.
    pub(crate) max_seq: usize,
    pub(crate) logit_rows: usize,
    /// One token's q, k and v as one buffer and a view of each part, for the layers that
    /// project them in one matmul (`GpuLayer::qkv`); None where the parts' offsets cannot be
    /// bound or no layer holds them stacked.
    one_token_qkv: Option<(GpuBuffer, [GpuBuffer; 3])>,
    /// A batched decode's table of sequences and its scratch, made by the first batch over
    /// shared caches ([`Model::decode_batch`]) and grown with the batch.
    pub(crate) batch_attention: Option<BatchScratch>,
}

/// What a batch over shared caches attends with, for up to `rows` sequences: the table
/// (ops::attention::decode_batch_table) and a scratch part of `per_row` floats per row.
pub(crate) struct BatchScratch {
    pub rows: usize,
    pub per_row: usize,
    pub table: GpuBuffer,
    pub scores: GpuBuffer,
}

/// What a [`Model`] allocates besides its weights: the run state for chunks of `chunk`
/// tokens and the KV cache of `max_seq` tokens, as sizes (the table both the allocation and
/// the memory estimates read).
pub(crate) struct StateLayout {
    state: RunStateSizes,
    /// q's, k's and v's outputs (before q's and k's per-head norms): [`Model::qkv_out`].
    qkv_out: [usize; 3],
    /// gate's and up's: [`Model::gate_up_out`].
    gate_up_out: [usize; 2],
    /// Floats in each part of the x·Aᵀ scratch.
    lora_h: usize,
    /// (S, NKV·HS) per layer, for k and for v.
    cache: usize,
    /// R: logits rows per cross-entropy pass, bounded by the binding limit.
    logit_rows: usize,
}

/// The run state's x·Aᵀ scratch: one (chunk, largest rank) part per target that reads an input
/// another may share (q, k, v: [`SHARED_INPUT_TARGETS`]), sized again when an adapter is set.
fn lora_h_arena(ctx: &GpuContext, chunk: usize, max_rank: usize) -> Result<Arena> {
    ctx.alloc_arena(&[lora_h_len(chunk, max_rank); SHARED_INPUT_TARGETS])
}

fn lora_h_len(chunk: usize, max_rank: usize) -> usize {
    chunk * max_rank.max(1)
}

/// The most targets that read one input: q, k and v.
const SHARED_INPUT_TARGETS: usize = 3;

impl StateLayout {
    pub(crate) fn new(cfg: &Config, chunk: usize, max_seq: usize, max_rank: usize, binding_limit: u64) -> Self {
        let (c, ff, v, qd, kvd) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.q_dim(), cfg.kv_dim());
        let logit_rows = ((binding_limit / (v as u64 * 4)) as usize).clamp(1, chunk);
        let (part_rows, split) = lm_head_parts(cfg, binding_limit);
        let state = RunStateSizes {
            x: chunk * c,
            xn: chunk * c,
            rstd: chunk,
            rstd_q: if cfg.qk_norm { chunk * cfg.n_heads } else { 0 },
            rstd_k: if cfg.qk_norm { chunk * cfg.n_kv_heads } else { 0 },
            q: if cfg.qk_norm { chunk * qd } else { 0 },
            k: if cfg.qk_norm { chunk * kvd } else { 0 },
            q_rot: chunk * qd,
            k_rot: chunk * kvd,
            att: chunk * qd,
            proj: chunk * c,
            h: chunk * ff,
            pos: chunk,
            logits: logit_rows * v,
            targets: logit_rows,
            losses: logit_rows,
            vocab_part: if split { logit_rows * part_rows } else { 1 },
            scores: crate::ops::attention::decode_scratch_len(cfg.n_heads, cfg.head_size, max_seq),
            decode_q: qd,
            decode_att: qd,
            picked: logit_rows.next_multiple_of(4),
        };
        StateLayout { state, qkv_out: [chunk * qd, chunk * kvd, chunk * kvd], gate_up_out: [chunk * ff; 2], lora_h: lora_h_len(chunk, max_rank), cache: max_seq * kvd, logit_rows }
    }

    /// Bytes of the run state and the KV cache.
    pub(crate) fn bytes(&self, n_layers: usize) -> u64 {
        let lora_h = SHARED_INPUT_TARGETS as u64 * pooled_bytes(4 * self.lora_h as u64);
        let outs: u64 = self.qkv_out.iter().chain(&self.gate_up_out).map(|&n| pooled_bytes(4 * n as u64)).sum();
        self.state.bytes() + outs + lora_h + 2 * n_layers as u64 * pooled_bytes(4 * self.cache as u64)
    }
}

impl Model {
    pub fn new(ctx: &GpuContext, cfg: &Config, w: HostWeights, opts: ModelOptions) -> Result<Self> {
        let layers = w.layers.iter().enumerate().map(|(i, l)| GpuLayer::upload(ctx, cfg, i, l)).collect::<Result<Vec<_>>>()?;
        Self::assemble(ctx, cfg, layers, w.embed, w.lm_head, &w.final_norm, opts)
    }

    /// The model read from `src` a layer at a time, each put on the GPU before the next is
    /// read: the host holds one layer (and the embedding, unless the GPU looks tokens up), never the
    /// whole model.
    pub fn stream(ctx: &GpuContext, cfg: &Config, src: &dyn TensorSource, quant: Option<WeightFormat>, opts: ModelOptions) -> Result<Self> {
        let r = WeightReader { cfg, src, quant };
        let layers = (0..cfg.n_layers).map(|i| GpuLayer::upload(ctx, cfg, i, &r.layer(i)?)).collect::<Result<Vec<_>>>()?;
        Self::assemble(ctx, cfg, layers, r.embed()?, r.lm_head()?, &r.final_norm()?, opts)
    }

    /// The model around its uploaded blocks: the lm_head (split to fit bindings), the final
    /// norm, the work buffers and the KV cache.
    fn assemble(ctx: &GpuContext, cfg: &Config, layers: Vec<GpuLayer>, embed: Matrix, lm_head_w: Option<Matrix>, final_norm: &[f32], opts: ModelOptions) -> Result<Self> {
        let v = cfg.vocab_size;
        let limit = opts.max_binding.unwrap_or(ctx.limits().max_storage_buffer_binding_size).min(ctx.limits().max_buffer_size);
        // Split the lm_head by rows so that each part (and its logits) fits one binding.
        let head = lm_head_w.as_ref().unwrap_or(&embed);
        // Parts are sized as if in f32, the widest format, so they fit whatever the head holds.
        let (part_rows, _) = lm_head_parts(cfg, limit);
        let mut lm_head = Vec::new();
        for start in (0..v).step_by(part_rows) {
            let end = (start + part_rows).min(v);
            let part = if start == 0 && end == v { Linear::upload(ctx, head)? } else { Linear::upload(ctx, &head.rows_slice(start, end)?)? };
            lm_head.push((start, part));
        }
        // A tied head's rows are the embeddings themselves, but for NF4 cut into parts (each
        // quantized again) and rows the gather cannot decode; token ids go to the GPU as f32.
        let gathers = lm_head_w.is_none()
            && (lm_head.len() == 1 || embed.format() != WeightFormat::Quant(QuantFormat::Nf4))
            && (embed.format() == WeightFormat::F32 || embed.cols.is_multiple_of(8))
            && v < 1 << 24;
        let embed = (!gathers).then_some(embed);
        let chunk = opts.chunk.max(1);
        let max_seq = opts.max_seq.max(1);
        let layout = StateLayout::new(cfg, chunk, max_seq, 0, limit);
        let logit_rows = layout.logit_rows;
        let state = RunState::alloc(ctx, &layout.state)?;
        let (qkv_out, gate_up_out) = (StackedParts::alloc(ctx, &layout.qkv_out)?, StackedParts::alloc(ctx, &layout.gate_up_out)?);
        let lora_h = lora_h_arena(ctx, chunk, 0)?;
        let cache = KvCache::alloc(ctx, cfg, max_seq)?;
        let one_token_qkv = if layers.iter().any(|l| l.qkv.is_some()) { one_token_qkv(ctx, cfg)? } else { None };
        Ok(Model {
            cfg: cfg.clone(),
            embed,
            layers,
            final_norm: ctx.upload_f32(final_norm)?,
            lm_head,
            binding_limit: limit,
            adapter: None,
            state,
            qkv_out,
            gate_up_out,
            lora_h,
            cache,
            chunk,
            max_seq,
            logit_rows,
            one_token_qkv,
            batch_attention: None,
        })
    }

    /// The format of the blocks' linear weights on the GPU, and of the lm_head's.
    pub fn formats(&self) -> (WeightFormat, WeightFormat) {
        let linear = self.layers.first().map_or(WeightFormat::F32, |l| l.q.format());
        (linear, self.lm_head[0].1.format())
    }

    /// Parts the lm_head was split into (1 when it fits one binding).
    pub fn lm_head_parts(&self) -> usize {
        self.lm_head.len()
    }

    pub fn reset(&mut self) {
        self.rewind(0);
    }

    /// Keeps the first `len` cached tokens (at most those held): the next `forward` continues
    /// after them, overwriting the rest.
    pub fn rewind(&mut self, len: usize) {
        self.cache.rewind(len);
    }

    /// How many leading tokens of `tokens` the cache already holds.
    pub fn cached_prefix(&self, tokens: &[u32]) -> usize {
        self.cache.cached_prefix(tokens)
    }

    /// Puts `adapter` on the GPU and applies it from the next token on (None: the base
    /// model alone). Fails, naming the tensor, when its shapes are not this model's.
    pub fn set_adapter(&mut self, ctx: &GpuContext, adapter: Option<Adapter>, origin: &str) -> Result<()> {
        let gpu = adapter.map(|a| self.upload_adapter(ctx, a, origin)).transpose()?;
        self.swap_adapter(gpu);
        Ok(())
    }

    /// Checks `adapter` against this model and puts it on the GPU, ready for
    /// [`Model::swap_adapter`]; several can be held at once (a server's adapters).
    pub fn upload_adapter(&mut self, ctx: &GpuContext, adapter: Adapter, origin: &str) -> Result<GpuAdapter> {
        adapter.check_against(&self.cfg, origin)?;
        let gpu = GpuAdapter::upload(ctx, adapter, &self.cfg)?;
        if lora_h_len(self.chunk, gpu.max_rank()) > self.lora_h.views[0].len_words() {
            self.lora_h = lora_h_arena(ctx, self.chunk, gpu.max_rank())?;
        }
        Ok(gpu)
    }

    /// Applies `adapter` from the next token on (None: the base alone) and returns the one
    /// it replaces. No upload: switching between held adapters costs nothing but the
    /// emptied KV cache.
    pub fn swap_adapter(&mut self, adapter: Option<GpuAdapter>) -> Option<GpuAdapter> {
        self.reset();
        std::mem::replace(&mut self.adapter, adapter)
    }

    /// Puts the token embeddings of `tokens` (checked against the vocabulary) at the start of
    /// `out`: looked up on the GPU where the tied lm_head holds them, else each row copied once
    /// on the host.
    pub(crate) fn upload_embeddings(&self, ctx: &GpuContext, out: &GpuBuffer, tokens: &[u32]) -> Result<()> {
        if let Some(id) = tokens.iter().find(|&&id| id as usize >= self.cfg.vocab_size) {
            return Err(Error::Shape(format!("token id {id} is outside the vocabulary of {}", self.cfg.vocab_size)));
        }
        let Some(embed) = &self.embed else {
            let ids = ctx.alloc_scratch_f32(tokens.len().next_multiple_of(4))?;
            ctx.write_f32(&ids, &token_ids(tokens));
            return self.look_up_on_gpu(ctx, out, &ids, tokens.len());
        };
        let row_bytes = 4 * self.cfg.hidden_size;
        ctx.write_pieces(out, tokens.len() * row_bytes, |put| embed.gather_rows(tokens, self.cfg.embed_scale, |i, row| put(i * row_bytes, row)));
        Ok(())
    }

    /// Whether the GPU looks tokens up (the tied lm_head holds the embeddings there), so that
    /// it can run a token it picked itself (model/gpu_picks.rs).
    pub fn looks_up_on_gpu(&self) -> bool {
        self.embed.is_none()
    }

    /// Puts the embeddings of the `n` token ids in `ids` ([`token_ids`]) at the start of `out`,
    /// from the tied lm_head's rows (where [`Model::looks_up_on_gpu`]).
    pub(crate) fn look_up_on_gpu(&self, ctx: &GpuContext, out: &GpuBuffer, ids: &GpuBuffer, n: usize) -> Result<()> {
        for (first_row, part) in &self.lm_head {
            part.gather(ctx, out, ids, n, TableRows { first_row: *first_row, scale: self.cfg.embed_scale })?;
        }
        Ok(())
    }

    /// The adapter and how it adapts layer `i`'s `target`, if it does.
    pub(crate) fn adapted(&self, i: usize, target: Target) -> Option<(&GpuAdapter, LoraUse)> {
        self.adapter.as_ref().and_then(|a| a.lora_use(i, target).map(|u| (a, u)))
    }

    /// How layer `i`'s `targets`, which read one input (q, k, v; gate, up), are adapted, for
    /// one launch through their stacked weight.
    pub(crate) fn stacking(&self, i: usize, targets: &[Target]) -> Stacking<'_> {
        self.adapter.as_ref().map_or(Stacking::Plain, |a| a.stacking(i, targets))
    }

    /// The adapter's LoRA over layer `i`'s stacked `targets` (adapted alike) as the term of
    /// their launch for `t` tokens, after recording their x·Aᵀ from `inp`.
    fn stacked_term(&self, ctx: &GpuContext, i: usize, targets: &[Target], inp: &GpuBuffer, t: usize) -> Result<LowRankTerm<'_>> {
        let (Some(adapter), Stacking::Adapted(s)) = (self.adapter.as_ref(), self.stacking(i, targets)) else {
            unreachable!("a stacked launch's term where no group adapts its targets")
        };
        // one part of the scratch per slot of the group, from its first
        adapter.stacked_term(ctx, s, inp, &self.lora_h, &|m| adapter.shared_slot(m), &self.lora_h.whole, adapter.tensors[s.first.index].dims(t))
    }

    /// out(T, out) = inp·Wᵀ (+ bias) (+ the adapter's part) for layer `i`'s `target`, combined
    /// with what out holds as `acc` says.
    #[allow(clippy::too_many_arguments)]
    fn project(&self, ctx: &GpuContext, i: usize, target: Target, out: &GpuBuffer, inp: &GpuBuffer, t: usize, acc: Accumulate) -> Result<()> {
        let layer = &self.layers[i];
        let Some((adapter, u)) = self.adapted(i, target) else {
            return layer.base_forward(ctx, target, out, inp, t, acc, None);
        };
        let lora = &adapter.tensors[u.index];
        let (b, d) = match u.part {
            None => (&lora.b, lora.dims(t)),
            Some(p) => (&lora.parts[p.index].1, lora.part_dims(t, p.rows)),
        };
        // one part of the scratch per slot of the targets that share an input
        let h_part = |i: usize| adapter.shared_slot(i);
        adapter.lora_down(ctx, u, inp, &self.lora_h, &h_part, d)?;
        let h = &self.lora_h.views[h_part(u.index)];
        layer.base_forward(ctx, target, out, inp, t, acc, Some(lora_up_term(h, b, d)))
    }

    /// What layer `i` runs as one launch for `t` tokens: q, k and v of one token as one matmul,
    /// and gate, up and the activation of up to 16 as one matrix-vector launch on GPUs (the
    /// other kernel paths have no such kernel), where the layer holds them stacked and no
    /// adapter changes them, or (on GPUs) the adapter adapts all of them alike; on GPUs each
    /// with the norm before it (after attention's output is added to the stream in o's launch,
    /// where no post-norm comes between), the adapter's x·Aᵀ too.
    fn fused(&self, ctx: &GpuContext, i: usize, t: usize) -> Fused<'_> {
        let layer = &self.layers[i];
        let gemv = t <= GEMV_ROWS && ctx.kernel_paths() == KernelPaths::Gpu && self.cfg.hidden_size.is_multiple_of(8);
        // Ok(None): no adapter changes them; Ok(Some): one adapts them all on the stacked
        // launch; Err: neither (each projected apart)
        let lora = |targets: &[Target]| -> std::result::Result<Option<StackedLora<'_>>, ()> {
            if targets.iter().all(|&target| self.adapted(i, target).is_none()) {
                return Ok(None);
            }
            let adapter = self.adapter.as_ref().filter(|_| gemv).ok_or(())?;
            let widths: Vec<usize> = targets.iter().map(|&t| layer.linear(t).shape().0).collect();
            adapter.stacked(i, targets, &widths, &self.lora_h.whole).map(Some).ok_or(())
        };
        let (qkv_lora, gate_up_lora) = (lora(&[Target::Q, Target::K, Target::V]), lora(&[Target::Gate, Target::Up]));
        // one token's into its own buffer; 2 to 16 tokens' on GPUs into the chunk's q, k and v,
        // in blocks (that launch norms its input)
        let qkv = match &self.one_token_qkv {
            Some((whole, _)) if t == 1 => Some(QkvOut::Row(whole)),
            _ if t > 1 && gemv && self.qkv_out.together() => Some(QkvOut::Blocks(&self.qkv_out)),
            _ => None,
        }
        .filter(|_| layer.qkv.is_some() && layer.q_norm.is_none() && qkv_lora.is_ok());
        let gate_up = layer.gate_up.as_ref().filter(|_| gemv && gate_up_lora.is_ok());
        // else, where no adapter changes them or one adapts them alike, one tiled launch each
        // (where it can run; the adapter's as its term, which `run_layers` gives)
        let qkv_out = (qkv.is_none() && self.stacking(i, &[Target::Q, Target::K, Target::V]).stacks()).then_some(&self.qkv_out);
        let gate_up_out = (gate_up.is_none() && self.stacking(i, &[Target::Gate, Target::Up]).stacks()).then_some(&self.gate_up_out);
        let (qkv_lora, gate_up_lora) = (qkv_lora.ok().flatten().filter(|_| qkv.is_some()), gate_up_lora.ok().flatten().filter(|_| gate_up.is_some()));
        Fused {
            qkv,
            gate_up,
            qkv_norms: qkv.is_some() && gemv,
            gate_up_norms: gate_up.is_some() && layer.post_attn_norm.is_none(),
            qkv_lora,
            gate_up_lora,
            qkv_out,
            qkv_out_lora: None,
            gate_up_out,
            gate_up_out_lora: None,
        }
    }

    /// Fails when `cache` has no room for `t` more tokens.
    pub(crate) fn check_room(&self, cache: &KvCache, t: usize) -> Result<()> {
        let past = cache.len();
        if let Some((_, why)) = self.cfg.context_limit().filter(|(limit, _)| past + t > *limit) {
            return Err(Error::unsupported("the model", format!("the context would hold {} tokens, more than {why}, so it stops there", past + t)));
        }
        if past + t > cache.capacity {
            return Err(Error::invalid_setting("ctx", format!(
                "the context would hold {} tokens, more than the {} the KV cache was made for",
                past + t,
                cache.capacity
            )));
        }
        Ok(())
    }

    /// Pushes `tokens` (at most `chunk`) through the layers at positions cache.len().., adds
    /// their keys and values to the cache and leaves the final normed states in `xn`.
    fn forward_chunk(&mut self, ctx: &GpuContext, tokens: &[u32]) -> Result<()> {
        self.check_room(&self.cache, tokens.len())?;
        self.upload_embeddings(ctx, &self.state.x, tokens)?;
        self.run_cached(ctx, tokens.len())?;
        self.cache.ids.extend_from_slice(tokens);
        Ok(())
    }

    /// Pushes the `t` tokens whose embeddings are in `x` through the layers at positions
    /// cache.len().. (which has room for them), writing their keys and values into the cache
    /// (the caller records their ids), and leaves the final normed states in `xn`.
    pub(crate) fn run_cached(&self, ctx: &GpuContext, t: usize) -> Result<()> {
        let past = self.cache.len();
        let pos: Vec<u32> = (past as u32..(past + t) as u32).collect();
        let (cache, s) = (&self.cache, &self.state);
        let (scores, q_one, att_one) = (&s.scores, &s.decode_q, &s.decode_att);
        self.run_layers(ctx, t, &pos, &|i| Attention::Cached { k_cache: &cache.k[i], v_cache: &cache.v[i], past, scores, q_one, att_one })
    }

    /// Pushes the `t` tokens (at most `chunk`) whose embeddings are in `x`, at positions `pos`,
    /// through the layers, layer `i` attending as `attention(i)` says, and leaves the final
    /// normed states in `xn`.
    pub(crate) fn run_layers<'a>(&'a self, ctx: &GpuContext, t: usize, pos: &[u32], attention: &dyn Fn(usize) -> Attention<'a>) -> Result<()> {
        let cfg = &self.cfg;
        let s = &self.state;
        ctx.write_bytes(&s.pos, bytemuck::cast_slice(pos));
        let b = BlockBuffers {
            x: &s.x,
            x_mid: None,
            x_out: None,
            xn1: &s.xn,
            rstd1: &s.rstd,
            xn2: &s.xn,
            rstd2: &s.rstd,
            q_raw: &self.qkv_out.views[0],
            k_raw: &self.qkv_out.views[1],
            rstd_q: &s.rstd_q,
            rstd_k: &s.rstd_k,
            q: if cfg.qk_norm { &s.q } else { &self.qkv_out.views[0] },
            k: if cfg.qk_norm { &s.k } else { &self.qkv_out.views[1] },
            v: &self.qkv_out.views[2],
            q_rot: &s.q_rot,
            k_rot: &s.k_rot,
            att: &s.att,
            proj: &s.proj,
            // the normed input of q/k/v and of gate/up is used up by then
            o_out: &s.xn,
            down_out: &s.xn,
            rstd_po: &s.rstd,
            rstd_pf: &s.rstd,
            gate: &self.gate_up_out.views[0],
            up: &self.gate_up_out.views[1],
            h: &s.h,
            pos: &s.pos,
        };
        // each block's last launch norms its output for the next block (unless the next one's
        // q/k/v launch norms its input), the last one's with the final norm (into xn)
        let mut next_fused = self.fused(ctx, 0, t);
        for (i, l) in self.layers.iter().enumerate() {
            let fused = next_fused;
            let next_norm = match self.layers.get(i + 1) {
                Some(next) => {
                    next_fused = self.fused(ctx, i + 1, t);
                    (!next_fused.qkv_norms).then_some(NextNorm { weight: &next.attn_norm, out: b.xn1, rstd: b.rstd1 })
                }
                None => Some(NextNorm { weight: &self.final_norm, out: b.xn1, rstd: b.rstd1 }),
            };
            let chain = Chain { input_normed: i > 0 && !fused.qkv_norms, next_norm };
            let b = match (fused.qkv, &self.one_token_qkv) {
                (Some(QkvOut::Row(_)), Some((_, [q, k, v]))) => BlockBuffers { q, k, v, ..b },
                _ => b,
            };
            // the adapter's LoRA as the stacked launches' term, where one adapts their targets alike
            let (qkv, gate_up) = ([Target::Q, Target::K, Target::V], [Target::Gate, Target::Up]);
            let qkv_term = |inp: &GpuBuffer| self.stacked_term(ctx, i, &qkv, inp, t);
            let gate_up_term = |inp: &GpuBuffer| self.stacked_term(ctx, i, &gate_up, inp, t);
            let adapted = |targets: &[Target]| matches!(self.stacking(i, targets), Stacking::Adapted(..));
            let fused = Fused {
                qkv_out_lora: (fused.qkv_out.is_some() && adapted(&qkv)).then_some(&qkv_term as &LoraDown),
                gate_up_out_lora: (fused.gate_up_out.is_some() && adapted(&gate_up)).then_some(&gate_up_term as &LoraDown),
                ..fused
            };
            block_forward(ctx, cfg, i, l, &b, t, attention(i), chain, fused, &|target, out, inp, acc| self.project(ctx, i, target, out, inp, t, acc))?;
        }
        Ok(())
    }

    /// Appends `tokens` to the context (in chunks) and returns the logits (V) after the last.
    pub async fn forward(&mut self, ctx: &GpuContext, tokens: &[u32]) -> Result<Vec<f32>> {
        self.run(ctx, tokens)?;
        self.read_logits(ctx).await
    }

    /// [`Model::forward`] without reading the logits: they stay on the GPU, where decoding
    /// picks from them (model/gpu_picks.rs).
    pub fn run(&mut self, ctx: &GpuContext, tokens: &[u32]) -> Result<()> {
        if tokens.is_empty() {
            return Err(Error::Shape("no tokens to run".into()));
        }
        let mut last_t = 0;
        for part in tokens.chunks(self.chunk) {
            self.forward_chunk(ctx, part)?;
            last_t = part.len();
        }
        self.lm_head_rows(ctx, last_t - 1, 1)
    }

    /// The logits (V) after the token the model last ran.
    pub async fn read_logits(&self, ctx: &GpuContext) -> Result<Vec<f32>> {
        ctx.read_f32_prefix(&self.state.logits, self.cfg.vocab_size).await
    }

    /// logits(rows, V) = lm_head applied to rows r0..r0+rows of the last chunk's final
    /// states, part by part when the lm_head is split.
    pub(crate) fn lm_head_rows(&self, ctx: &GpuContext, r0: usize, rows: usize) -> Result<()> {
        let c = self.cfg.hidden_size;
        let s = &self.state;
        // the matmuls read their input from offset 0
        ctx.copy_region(&s.xn, (r0 * c * 4) as u64, &s.proj, 0, (rows * c * 4) as u64);
        self.head_logits(ctx, &s.logits, &s.vocab_part, &s.proj, rows)
    }

    /// logits(rows, V) = inp(rows, C)·lm_headᵀ; a split lm_head runs part by part through
    /// `vocab_part` (rows, largest part), each part copied into its columns of the logits.
    pub(crate) fn head_logits(&self, ctx: &GpuContext, logits: &GpuBuffer, vocab_part: &GpuBuffer, inp: &GpuBuffer, rows: usize) -> Result<()> {
        let v = self.cfg.vocab_size;
        if let [(_, head)] = self.lm_head.as_slice() {
            return head.forward(ctx, logits, inp, rows, None);
        }
        for (start, part) in &self.lm_head {
            let n = part.shape().0;
            part.forward(ctx, vocab_part, inp, rows, None)?;
            block_copy(ctx, logits, Columns { stride: v, col: *start }, vocab_part, Columns { stride: n, col: 0 }, rows, n)?;
        }
        Ok(())
    }

    /// dinp(rows, C) = dlogits(rows, V)·lm_head: a split lm_head part by part, each part's
    /// columns of the gradient gathered into `vocab_part` first.
    pub(crate) fn head_backward_input(&self, ctx: &GpuContext, dinp: &GpuBuffer, dlogits: &GpuBuffer, vocab_part: &GpuBuffer, rows: usize) -> Result<()> {
        let v = self.cfg.vocab_size;
        if let [(_, head)] = self.lm_head.as_slice() {
            return head.backward_input(ctx, dinp, dlogits, rows, 0.0, None);
        }
        for (p, (start, part)) in self.lm_head.iter().enumerate() {
            let n = part.shape().0;
            block_copy(ctx, vocab_part, Columns { stride: n, col: 0 }, dlogits, Columns { stride: v, col: *start }, rows, n)?;
            part.backward_input(ctx, dinp, vocab_part, rows, if p == 0 { 0.0 } else { 1.0 }, None)?;
        }
        Ok(())
    }

    /// Logits (T, V) of every position of `tokens` as one sequence from position 0.
    pub async fn logits(&mut self, ctx: &GpuContext, tokens: &[u32]) -> Result<Vec<f32>> {
        self.reset();
        let v = self.cfg.vocab_size;
        let mut out = Vec::with_capacity(tokens.len() * v);
        for part in tokens.chunks(self.chunk) {
            self.forward_chunk(ctx, part)?;
            for r0 in (0..part.len()).step_by(self.logit_rows) {
                let rows = self.logit_rows.min(part.len() - r0);
                self.lm_head_rows(ctx, r0, rows)?;
                out.extend(ctx.read_f32_prefix(&self.state.logits, rows * v).await?);
            }
        }
        Ok(out)
    }

    /// (predicted tokens, Σ NLL) of `tokens` as one sequence from position 0: each token
    /// after the first is predicted from the ones before it (natural log).
    pub async fn score(&mut self, ctx: &GpuContext, tokens: &[u32]) -> Result<(usize, f64)> {
        let nll = self.token_nll(ctx, tokens).await?;
        let total: f64 = nll.iter().map(|&x| x as f64).sum();
        if !total.is_finite() {
            return Err(Error::NotFinite("the log-likelihood is NaN or infinite".into()));
        }
        Ok((nll.len(), total))
    }

    /// Each predicted token's NLL: entry i is −log p(tokens[i + 1] | tokens[..=i]).
    pub async fn token_nll(&mut self, ctx: &GpuContext, tokens: &[u32]) -> Result<Vec<f32>> {
        if tokens.len() < 2 {
            return Err(Error::Shape(format!("scoring needs at least 2 tokens, got {}", tokens.len())));
        }
        self.reset();
        let mut nll = Vec::with_capacity(tokens.len());
        for (i, part) in tokens.chunks(self.chunk).enumerate() {
            let start = i * self.chunk;
            self.forward_chunk(ctx, part)?;
            for r0 in (0..part.len()).step_by(self.logit_rows) {
                let rows = self.logit_rows.min(part.len() - r0);
                let targets: Vec<u32> = (start + r0..start + r0 + rows).map(|t| tokens.get(t + 1).copied().unwrap_or(IGNORE)).collect();
                ctx.write_bytes(&self.state.targets, bytemuck::cast_slice(&targets));
                self.lm_head_rows(ctx, r0, rows)?;
                cross_entropy_forward(ctx, &self.state.losses, &self.state.logits, &self.state.targets, rows, self.cfg.vocab_size)?;
                nll.extend(ctx.read_f32_prefix(&self.state.losses, rows).await?);
            }
        }
        // the last token predicts nothing
        nll.truncate(tokens.len() - 1);
        Ok(nll)
    }
}
