//! One decoder block's forward, for inference and training alike: rmsnorm → q, k, v
//! (→ Qwen3's per-head norms of q and k) → rope (none on SmolLM3's NoPE layers) → causal GQA
//! attention → o (→ Gemma's post-norm) → residual → rmsnorm → gate, up → swiglu or geglu →
//! down (→ post-norm) → residual.
//! What differs is passed in: where the intermediates go (inference reuses one chunk's
//! buffers and adds to the residual stream in place; training keeps what its backward
//! reads), the attention mode, and how a projection adds its LoRA part.

use super::forward::{GpuLayer, QkvOut};
use super::linear::{Linear, StackedParts};
use super::Config;
use crate::lora::Target;
use crate::ops::attention::{attention_decode, attention_decode_batch, attention_forward, attention_forward_cached, cached_row_by_row, rope_fits, AttentionDims, BatchSeq, DecodeBatch, DecodeToken, Segments};
use crate::ops::residual::{residual_accumulate, residual_forward};
use crate::ops::rmsnorm::{add_rmsnorm_forward, rmsnorm_forward};
use crate::ops::rope::{rope_forward, rope_forward_in_place, RopeDims};
use crate::ops::swiglu::gated_forward;
use crate::lora::gpu::StackedLora;
use crate::error::ensure;
use crate::ops::matmul::{Accumulate, InputNorm, LowRankTerm};
use crate::{Error, GpuBuffer, GpuContext, Result};

pub(crate) enum Attention<'a> {
    /// Inference: the chunk's keys and values are appended to the layer's cache at `past`
    /// tokens, and each token attends to everything cached before it. `q_one` and `att_one`
    /// (NH·HS): one token's query and output where the chunk goes a token at a time (lavapipe
    /// over a long cache: `cached_row_by_row`) and heads are not a multiple of 4.
    Cached { k_cache: &'a GpuBuffer, v_cache: &'a GpuBuffer, past: usize, scores: &'a GpuBuffer, q_one: &'a GpuBuffer, att_one: &'a GpuBuffer },
    /// Training: packed examples, kept apart by their segment ids; the softmax statistics
    /// are kept for the backward.
    Packed { seg: Segments<'a>, stats: &'a GpuBuffer },
    /// Inference for several sequences, one token each: token r's key and value go to
    /// `seqs[r]`'s cache, and it attends to that cache alone, all in one launch where the
    /// caches are `shared`, else one sequence after another (through `q_one` and `att_one`,
    /// NH·HS, where heads are not a multiple of 4); the projections around it run on all the
    /// rows.
    Batched { seqs: Vec<CachedSeq<'a>>, scores: &'a GpuBuffer, q_one: &'a GpuBuffer, att_one: &'a GpuBuffer, shared: Option<SharedBatch<'a>> },
}

/// A batch's caches as parts of one pair of buffers for the layer (`Model::new_caches`), and
/// what one launch over them reads: each sequence's place (`seqs`, and the table of them),
/// and a scratch of `per_row` floats for each.
pub(crate) struct SharedBatch<'a> {
    pub k: &'a GpuBuffer,
    pub v: &'a GpuBuffer,
    pub seqs: &'a [BatchSeq],
    pub table: &'a GpuBuffer,
    pub scores: &'a GpuBuffer,
    pub per_row: usize,
}

/// One sequence's cache for layer i, holding `past` tokens.
pub(crate) struct CachedSeq<'a> {
    pub k: &'a GpuBuffer,
    pub v: &'a GpuBuffer,
    pub past: usize,
}

/// Where the block reads and writes, all (N, ·) for its N tokens.
#[derive(Clone, Copy)]
pub(crate) struct BlockBuffers<'a> {
    /// (N, C) the residual stream coming in.
    pub x: &'a GpuBuffer,
    /// (N, C) the stream after attention, and after the MLP; None: `x` is updated in place.
    pub x_mid: Option<&'a GpuBuffer>,
    pub x_out: Option<&'a GpuBuffer>,
    /// The two norms' outputs and 1/rms (the same buffers twice when nothing is kept).
    pub xn1: &'a GpuBuffer,
    pub rstd1: &'a GpuBuffer,
    pub xn2: &'a GpuBuffer,
    pub rstd2: &'a GpuBuffer,
    /// (N, NH·HS), (N, NKV·HS): q and k as projected, before the per-head norms, and the
    /// norms' 1/rms (N·NH), (N·NKV); used only when the layer has q/k norms (Qwen3).
    pub q_raw: &'a GpuBuffer,
    pub k_raw: &'a GpuBuffer,
    pub rstd_q: &'a GpuBuffer,
    pub rstd_k: &'a GpuBuffer,
    /// (N, NH·HS), (N, NKV·HS) ×2 before rope; q_rot, k_rot after it; att the attention output.
    pub q: &'a GpuBuffer,
    pub k: &'a GpuBuffer,
    pub v: &'a GpuBuffer,
    pub q_rot: &'a GpuBuffer,
    pub k_rot: &'a GpuBuffer,
    pub att: &'a GpuBuffer,
    /// (N, C) o's and down's outputs before the residual add.
    pub proj: &'a GpuBuffer,
    /// With post-norms (Gemma 3): (N, C) o's and down's outputs before their norms, which
    /// write `proj`, and the norms' 1/rms (N).
    pub o_out: &'a GpuBuffer,
    pub down_out: &'a GpuBuffer,
    pub rstd_po: &'a GpuBuffer,
    pub rstd_pf: &'a GpuBuffer,
    /// (N, FF) ×3: gate, up, swiglu(gate, up).
    pub gate: &'a GpuBuffer,
    pub up: &'a GpuBuffer,
    pub h: &'a GpuBuffer,
    /// (N) u32: each token's position (in its example, or in the context).
    pub pos: &'a GpuBuffer,
}

/// How a block meets its neighbours: the previous block's last launch already normed this
/// one's input into xn1 (and rstd1), and this block's last launch adds its MLP's output and
/// norms the sum with `next_norm`'s weight (the next layer's input norm, or the final norm)
/// into its buffers. Default: each block norms its own input and ends with the add (in down's
/// launch where the stream is updated in place, for the next block's q/k/v launch to norm).
#[derive(Clone, Copy, Default)]
pub(crate) struct Chain<'a> {
    pub input_normed: bool,
    pub next_norm: Option<NextNorm<'a>>,
}

/// The norm a block's last launch applies for what follows it, and where it writes.
#[derive(Clone, Copy)]
pub(crate) struct NextNorm<'a> {
    pub weight: &'a GpuBuffer,
    pub out: &'a GpuBuffer,
    pub rstd: &'a GpuBuffer,
}

/// What the block runs as one launch instead of several, where no adapter changes those
/// weights or one adapts all of them alike: decoding's matrix-vector launches (`qkv`,
/// `gate_up`, with `qkv_lora`, `gate_up_lora`), and a chunk's (inference's or training's)
/// tiled launches through the stacked weights (`qkv_out`, `gate_up_out`, with their `_lora`).
/// Default: each target alone.
#[derive(Clone, Copy, Default)]
pub(crate) struct Fused<'a> {
    /// q, k and v as one matmul (`GpuLayer::qkv_forward`): one token's into a buffer of which
    /// the block's q, k and v are the views of its three parts, or a few tokens' (on GPUs) in
    /// blocks, the block's own q, k and v (layers without per-head norms of q and k).
    pub qkv: Option<QkvOut<'a>>,
    /// gate, up and the activation in one matrix-vector launch (`Linear::gated_forward`) with
    /// the layer's stacked gate and up, into the block's h.
    pub gate_up: Option<&'a Linear>,
    /// The q/k/v launch norms the block's input itself, which arrives un-normed in `x`
    /// (matrix-vector kernels; with `Chain::input_normed` false).
    pub qkv_norms: bool,
    /// o's launch adds attention's output to the stream in place, and the gate/up launch
    /// norms the sum itself (matrix-vector kernels; layers without a post-attention norm,
    /// the stream updated in place).
    pub gate_up_norms: bool,
    /// The adapter's q, k and v over the stacked q/k/v launch.
    pub qkv_lora: Option<StackedLora<'a>>,
    /// The adapter's gate and up over the gate/up launch.
    pub gate_up_lora: Option<StackedLora<'a>>,
    /// q, k and v of the block's tokens as one tiled launch through the layer's stacked
    /// weight, which writes them into these parts (`GpuLayer::stacked_forward`): the block's
    /// q, k and v (q_raw, k_raw and v with per-head norms). Where no adapter changes them, or
    /// with `qkv_out_lora`.
    pub qkv_out: Option<&'a StackedParts>,
    /// With `qkv_out`, the adapter's q, k and v as that launch's term (training, where it
    /// adapts all three alike).
    pub qkv_out_lora: Option<&'a LoraDown<'a>>,
    /// gate and up likewise: the block's gate and up.
    pub gate_up_out: Option<&'a StackedParts>,
    /// With `gate_up_out`, the adapter's gate and up as that launch's term (training, where
    /// it adapts both alike).
    pub gate_up_out_lora: Option<&'a LoraDown<'a>>,
}

/// Records x·Aᵀ of the parts of a stacked weight that an adapter adapts alike, from their
/// input, and gives their LoRA as the stacked launch's term.
pub(crate) type LoraDown<'a> = dyn Fn(&GpuBuffer) -> Result<LowRankTerm<'a>> + 'a;

/// out = inp·Wᵀ (+ bias) (+ the adapter's part) for one target of the block, combined with
/// what out holds as the Accumulate says.
pub(crate) type Project<'a> = dyn Fn(Target, &GpuBuffer, &GpuBuffer, Accumulate) -> Result<()> + 'a;

/// Rope of layer `i` for q and k (sliding-window layers have their own theta, unscaled).
pub(crate) fn rope_dims(cfg: &Config, i: usize, n: usize) -> RopeDims {
    let longrope = cfg.longrope.as_ref().map(|l| l.factors);
    let (theta, scaling, longrope) = match cfg.layer_attention(i).1 {
        Some(theta) => (theta, Default::default(), None),
        None => (cfg.rope_theta, cfg.rope_scaling, longrope),
    };
    RopeDims { n, heads: cfg.n_heads, kv_heads: cfg.n_kv_heads, head_size: cfg.head_size, rotary: cfg.rotary_dims, theta, scaling, longrope }
}

pub(crate) fn attention_dims(cfg: &Config, i: usize, n: usize) -> AttentionDims {
    let (window, _) = cfg.layer_attention(i);
    AttentionDims { scale: cfg.attn_scale, window, ..AttentionDims::causal(1, n, cfg.n_heads, cfg.n_kv_heads, cfg.head_size) }
}

/// Layer `i`'s forward for `n` tokens.
#[allow(clippy::too_many_arguments)]
pub(crate) fn block_forward(
    ctx: &GpuContext,
    cfg: &Config,
    i: usize,
    layer: &GpuLayer,
    b: &BlockBuffers,
    n: usize,
    attention: Attention,
    chain: Chain,
    fused: Fused,
    project: &Project,
) -> Result<()> {
    let (c, ff, eps) = (cfg.hidden_size, cfg.intermediate_size, cfg.rms_norm_eps);
    let rope = rope_dims(cfg, i, n);
    let att = attention_dims(cfg, i, n);
    let project_new = |target, out, inp| project(target, out, inp, Accumulate::OVERWRITE);
    let qkv_norm = fused.qkv_norms.then_some(InputNorm { weight: &layer.attn_norm, eps });
    match qkv_norm {
        Some(_) => ensure(fused.qkv.is_some() && !chain.input_normed, || format!("layer {i}: only the stacked q/k/v launch norms the input, which must arrive un-normed"))?,
        None if !chain.input_normed => rmsnorm_forward(ctx, b.xn1, b.rstd1, b.x, &layer.attn_norm, n, c, eps)?,
        None => {}
    }
    // the targets that read one input as one launch through the layer's stacked weight, where
    // the caller gives their outputs as its parts (and that can run here)
    let stacked = |out: Option<&StackedParts>, targets: &[Target], inp, lora| out.map_or(Ok(false), |out| layer.stacked_forward(ctx, targets, out, inp, n, lora));
    match (fused.qkv, layer.q_norm.as_ref().zip(layer.k_norm.as_ref())) {
        (Some(qkv), _) => {
            let input = if qkv_norm.is_some() { b.x } else { b.xn1 };
            let term = fused.qkv_lora.map(|l| l.down(ctx, input, n, qkv_norm)).transpose()?;
            layer.qkv_forward(ctx, qkv, input, n, qkv_norm, term)?
        }
        (None, norms) => {
            // with per-head norms, q and k as projected go to q_raw and k_raw
            let (q, k) = if norms.is_some() { (b.q_raw, b.k_raw) } else { (b.q, b.k) };
            if !stacked(fused.qkv_out, &[Target::Q, Target::K, Target::V], b.xn1, fused.qkv_out_lora)? {
                project_new(Target::Q, q, b.xn1)?;
                project_new(Target::K, k, b.xn1)?;
                project_new(Target::V, b.v, b.xn1)?;
            }
            if let Some((q_norm, k_norm)) = norms {
                // each head's HS values are one row of the norm
                rmsnorm_forward(ctx, b.q, b.rstd_q, b.q_raw, q_norm, n * cfg.n_heads, cfg.head_size, eps)?;
                rmsnorm_forward(ctx, b.k, b.rstd_k, b.k_raw, k_norm, n * cfg.n_kv_heads, cfg.head_size, eps)?;
            }
        }
    }
    // a decoded token's attention (one token, or a batch's one per sequence) puts its key and
    // value into the cache, and rotates its query and key itself where it can (rope's
    // frequencies fit its params)
    let decode = match attention {
        Attention::Cached { .. } => n == 1,
        Attention::Batched { .. } => true,
        Attention::Packed { .. } => false,
    } && cfg.head_size.is_multiple_of(4);
    let rotated_in_attention = decode && rope_fits(&rope);
    // (training rotates q and k where they were projected, where no head norm comes between)
    let in_place = b.q_rot.same(b.q);
    ensure(in_place == b.k_rot.same(b.k), || format!("layer {i}: q and k are rotated both in place or both apart"))?;
    match (layer.rope, in_place) {
        _ if rotated_in_attention => {}
        (true, true) => rope_forward_in_place(ctx, b.q, b.k, b.pos, rope)?,
        (true, false) => rope_forward(ctx, (b.q_rot, b.k_rot), b.q, b.k, b.pos, rope)?,
        (false, true) => {}
        (false, false) => {
            ctx.copy_region(b.q, 0, b.q_rot, 0, (n * cfg.q_dim() * 4) as u64);
            ctx.copy_region(b.k, 0, b.k_rot, 0, (n * cfg.kv_dim() * 4) as u64);
        }
    }
    // a decoded token's query and key: as projected where its attention rotates them, else as
    // rope's launch left them
    let (q_in, k_in, token_rope) = match rotated_in_attention {
        true => (b.q, b.k, layer.rope.then_some(rope)),
        false => (b.q_rot, b.k_rot, None),
    };
    let token = |row: usize, past: usize| DecodeToken { q: q_in, out: b.att, new: Some((k_in, b.v)), row, past, rope: token_rope };
    match attention {
        Attention::Cached { k_cache, v_cache, past, scores, .. } if decode => attention_decode(ctx, token(0, past), (k_cache, v_cache), scores, att)?,
        Attention::Cached { k_cache, v_cache, past, scores, q_one, att_one } => {
            let (at, bytes) = ((past * cfg.kv_dim() * 4) as u64, (n * cfg.kv_dim() * 4) as u64);
            ctx.copy_region(b.k_rot, 0, k_cache, at, bytes);
            ctx.copy_region(b.v, 0, v_cache, at, bytes);
            if cached_row_by_row(ctx, &att, past) {
                let one = OneRow { q_one, att_one, scores, dims: attention_dims(cfg, i, 1) };
                for r in 0..n {
                    one.attend(ctx, b, r, (k_cache, v_cache), false, past + r)?;
                }
            } else {
                attention_forward_cached(ctx, b.att, b.q_rot, k_cache, v_cache, past, att)?;
            }
        }
        Attention::Batched { shared: Some(sh), .. } if decode => {
            let batch = DecodeBatch { q: q_in, out: b.att, new: (k_in, b.v), rope: token_rope, caches: (sh.k, sh.v), seqs: sh.seqs, table: sh.table };
            attention_decode_batch(ctx, batch, sh.scores, sh.per_row, attention_dims(cfg, i, 1))?
        }
        Attention::Batched { seqs, scores, .. } if decode => {
            for (r, seq) in seqs.iter().enumerate() {
                attention_decode(ctx, token(r, seq.past), (seq.k, seq.v), scores, attention_dims(cfg, i, 1))?;
            }
        }
        Attention::Batched { seqs, scores, q_one, att_one, .. } => {
            let one = OneRow { q_one, att_one, scores, dims: attention_dims(cfg, i, 1) };
            for (r, seq) in seqs.iter().enumerate() {
                one.attend(ctx, b, r, (seq.k, seq.v), true, seq.past)?;
            }
        }
        Attention::Packed { seg, stats } => attention_forward(ctx, b.att, stats, b.q_rot, b.k_rot, b.v, seg, att)?,
    }
    let gate_up_norm = fused.gate_up_norms.then_some(InputNorm { weight: &layer.ffn_norm, eps });
    match (&layer.post_attn_norm, gate_up_norm) {
        (Some(w), None) => {
            project_new(Target::O, b.o_out, b.att)?;
            rmsnorm_forward(ctx, b.proj, b.rstd_po, b.o_out, w, n, c, eps)?;
            add_rmsnorm_forward(ctx, b.x_mid, b.xn2, b.rstd2, b.x, b.proj, &layer.ffn_norm, n, c, eps)?;
        }
        (None, None) => {
            project_new(Target::O, b.proj, b.att)?;
            add_rmsnorm_forward(ctx, b.x_mid, b.xn2, b.rstd2, b.x, b.proj, &layer.ffn_norm, n, c, eps)?;
        }
        // the gate/up launch norms the stream after o's adds to it
        (None, Some(_)) if fused.gate_up.is_some() && b.x_mid.is_none() => project(Target::O, b.x, b.att, Accumulate::ADD)?,
        (_, Some(_)) => return Err(Error::Shape(format!("layer {i}: only the stacked gate/up launch norms its input, after o's adds to the stream in place with no post-norm between"))),
    }
    let x_mid = b.x_mid.unwrap_or(b.x);
    match fused.gate_up {
        Some(gate_up) => {
            let input = if gate_up_norm.is_some() { x_mid } else { b.xn2 };
            let term = fused.gate_up_lora.map(|l| l.down(ctx, input, n, gate_up_norm)).transpose()?;
            gate_up.gated_forward(ctx, cfg.activation, b.h, input, n, gate_up_norm, term)?
        }
        None => {
            if !stacked(fused.gate_up_out, &[Target::Gate, Target::Up], b.xn2, fused.gate_up_out_lora)? {
                project_new(Target::Gate, b.gate, b.xn2)?;
                project_new(Target::Up, b.up, b.xn2)?;
            }
            gated_forward(ctx, cfg.activation, b.h, b.gate, b.up, n * ff)?;
        }
    }
    match (&layer.post_ffn_norm, chain.next_norm, b.x_out) {
        (Some(w), ..) => {
            project_new(Target::Down, b.down_out, b.h)?;
            rmsnorm_forward(ctx, b.proj, b.rstd_pf, b.down_out, w, n, c, eps)?;
        }
        // nothing to norm for the next block and the stream updated in place: down's launch
        // adds to it
        (None, None, None) => return project(Target::Down, x_mid, b.h, Accumulate::ADD),
        (None, ..) => project_new(Target::Down, b.proj, b.h)?,
    }
    match chain.next_norm {
        Some(next) => add_rmsnorm_forward(ctx, b.x_out, next.out, next.rstd, x_mid, b.proj, next.weight, n, c, eps),
        None => add_residual(ctx, x_mid, b.x_out, b.proj, n * c).map(|_| ()),
    }
}

/// One token's attention over a cache at a time, after rope's launch: a chunk over a cache
/// too long for attention_forward_cached on lavapipe, or a batch's sequences where heads are
/// not a multiple of 4. The decode kernel reads and writes the token's rows where they lie;
/// attention_forward_cached (heads not a multiple of 4) through buffers of one row (`q_one`,
/// `att_one`, from offset 0 as it reads them).
struct OneRow<'a> {
    q_one: &'a GpuBuffer,
    att_one: &'a GpuBuffer,
    scores: &'a GpuBuffer,
    dims: AttentionDims,
}

impl OneRow<'_> {
    /// Row `r` of the block's queries over the caches `(k, v)` (`past` tokens before it) into
    /// row `r` of its attention output; with `append`, its key and value (row `r` of the
    /// block's) go into the caches' row `past` first.
    fn attend(&self, ctx: &GpuContext, b: &BlockBuffers, r: usize, (k, v): (&GpuBuffer, &GpuBuffer), append: bool, past: usize) -> Result<()> {
        if self.dims.hs.is_multiple_of(4) {
            let token = DecodeToken { q: b.q_rot, out: b.att, new: append.then_some((b.k_rot, b.v)), row: r, past, rope: None };
            return attention_decode(ctx, token, (k, v), self.scores, self.dims);
        }
        if append {
            let kv_bytes = (self.dims.nkv * self.dims.hs * 4) as u64;
            ctx.copy_region(b.k_rot, r as u64 * kv_bytes, k, past as u64 * kv_bytes, kv_bytes);
            ctx.copy_region(b.v, r as u64 * kv_bytes, v, past as u64 * kv_bytes, kv_bytes);
        }
        let q_bytes = (self.dims.nh * self.dims.hs * 4) as u64;
        ctx.copy_region(b.q_rot, r as u64 * q_bytes, self.q_one, 0, q_bytes);
        attention_forward_cached(ctx, self.att_one, self.q_one, k, v, past, self.dims)?;
        ctx.copy_region(self.att_one, 0, b.att, r as u64 * q_bytes, q_bytes);
        Ok(())
    }
}

/// `out` = `x` + `proj`, or `x` += `proj` in place when there is no `out`; returns where the
/// sum is.
fn add_residual<'a>(ctx: &GpuContext, x: &'a GpuBuffer, out: Option<&'a GpuBuffer>, proj: &GpuBuffer, len: usize) -> Result<&'a GpuBuffer> {
    match out {
        Some(out) => {
            residual_forward(ctx, out, x, proj, len)?;
            Ok(out)
        }
        None => {
            residual_accumulate(ctx, x, proj, 1.0, len)?;
            Ok(x)
        }
    }
}
