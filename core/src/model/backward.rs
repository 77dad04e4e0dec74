//! The training pass over one packed micro-batch: the forward keeping what the backward
//! needs, cross-entropy on the counted tokens, and the backward down to the LoRA gradients.
//! It mirrors `Model::forward_chunk` layer by layer; frozen weights get no gradient, only
//! the input gradient flows through them (`dx = dy·W`, dequantized on the fly).
//!
//! A micro-batch is padding-free: its examples are concatenated into one row, with
//! segment ids that keep attention inside each example and positions that restart at 0.
//! With gradient checkpointing only each layer's input is kept; the backward recomputes the
//! layer's activations into one shared set just before it needs them.

use crate::gpu::layout::{buffer_set, pooled_bytes};
use crate::gpu::Arena;
use crate::lora::gpu::{fused_part_views, LoraLayout, LoraUse, Stacking};
use crate::lora::Target;
use crate::model::block::{attention_dims, block_forward, rope_dims, Attention, BlockBuffers, Chain, Fused, LoraDown, NextNorm};
use crate::model::forward::Model;
use crate::model::Config;
use crate::ops::attention::{attention_backward, segment_runs, AttentionDims, RopeGrad, Segments};
use crate::ops::cross_entropy::counted;
use crate::ops::embedding::token_ids;
use crate::ops::lora::{lora_backward_b, lora_backward_b_batched, lora_grad_a, lora_grad_a_shared, lora_input_term, lora_up_term, GradDest, LoraDims};
use crate::model::linear::{Linear, StackedParts};
use crate::ops::matmul::{sum_splits, weight_grad_splits, Accumulate, LowRankTerm, SplitParts, TermLayout};
use crate::ops::rmsnorm::{rmsnorm_backward, rmsnorm_backward_add};
use crate::ops::rope::RopeDims;
use crate::ops::swiglu::gated_backward;
use crate::{Error, GpuBuffer, GpuContext, Result};
use std::sync::Arc;

mod head;
use head::{head_rows, HeadPart, HeadRows, HeadTokens};
pub(crate) use head::lm_head_parts;

/// One micro-batch of concatenated examples, all (N).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TokenBatch {
    pub tokens: Vec<u32>,
    /// The next token where it carries loss, else [`crate::ops::cross_entropy::IGNORE`].
    pub targets: Vec<u32>,
    /// Position inside its example.
    pub pos: Vec<u32>,
    /// Which example the token belongs to.
    pub seg: Vec<u32>,
}

impl TokenBatch {
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Tokens that carry loss.
    pub fn counted(&self) -> usize {
        counted(&self.targets)
    }
}

/// ∂loss/∂(each token's NLL) for a training pass.
enum TokenWeights<'a> {
    /// The same for every token: 1 / (loss tokens of the step) for the mean NLL.
    Uniform(f32),
    /// From the tokens' NLLs, once the forward has them.
    FromLosses(&'a mut dyn FnMut(&[f32]) -> Vec<f32>),
}

/// LoRA dropout for one micro-batch: each adapted layer draws its own mask from `seed`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dropout {
    pub p: f32,
    pub seed: u32,
}

impl Dropout {
    pub const OFF: Dropout = Dropout { p: 0.0, seed: 0 };

    fn seed_for(self, tensor: usize) -> u32 {
        let x = (self.seed as u64) << 32 | tensor as u64;
        (crate::rng::Rng::new(x).next_u64() >> 32) as u32
    }
}

buffer_set! {
    /// What one layer's backward needs from its forward (the LoRA inputs x·Aᵀ are beside
    /// it, one per adapted target).
    LayerTensors / LayerActSizes {
        /// (N, C) attention norm output
        xn1,
        /// (N)
        rstd1,
        /// (N·NH) the q norm's 1/rms (Qwen3; else empty)
        rstd_q,
        /// (N·NKV) the k norm's 1/rms (Qwen3; else empty)
        rstd_k,
        /// (N, NH·HS) q after its per-head norm and rope (Qwen3; else empty: q is rotated in
        /// place, in `LayerActs::qkv`)
        q_rot,
        /// (N, NKV·HS) k's likewise
        k_rot,
        /// (N, NH·HS)
        att,
        /// (NH, N, 2)
        stats,
        /// (N, C) o's output before its post-norm (Gemma 3; else empty)
        o_out,
        /// (N) the post-attention norm's 1/rms (Gemma 3; else empty)
        rstd_po,
        /// (N, C) residual stream after attention
        x_mid,
        /// (N, C) MLP norm output
        xn2,
        /// (N)
        rstd2,
        /// (N, FF) swiglu output
        h,
        /// (N, C) down's output before its post-norm (Gemma 3; else empty)
        down_out,
        /// (N) the post-MLP norm's 1/rms (Gemma 3; else empty)
        rstd_pf,
    }
}

buffer_set! {
    /// Buffers used within one layer or the head, then reused.
    Scratch / ScratchSizes {
        /// (3N) u32: (0, start, len) per example (attention's runs)
        runs,
        /// (N, NH·HS) q after its per-head norm, before rope (Qwen3; else empty)
        q,
        /// (N, NKV·HS) k's likewise
        k,
        /// (N, C) attention / MLP output; the lm_head's input rows
        proj,
        /// (N)
        rstdf,
        /// (N, C) gradient of the residual stream
        dres,
        /// (N, C)
        dtmp,
        /// (N, FF)
        dh,
        /// (N, NH·HS)
        datt,
        /// (N, NH·HS) q's gradient before its per-head norm (Qwen3; else empty)
        dq_step,
        /// (N, NKV·HS) k's likewise
        dk_step,
        /// (R) u32
        row_targets,
        /// (R)
        row_weights,
        /// (R, V)
        logits,
        /// (R, V)
        dlogits,
        /// (R, largest lm_head part) when the lm_head is split
        vocab_part,
        /// (R)
        losses,
        /// (N) where the head keeps some rows ([`HeadTokens`]): the token of each kept row,
        /// as the row gather reads ids ([`token_ids`])
        kept_ids,
        /// (N) likewise: each token's kept row, or the count of kept rows where it has none
        kept_at,
    }
}

/// One layer's saved activations; q's, k's and v's outputs in one buffer, gate's and up's in
/// another, so that one launch through the layer's stacked weight writes each group
/// (`GpuLayer::stacked_forward`) where no adapter changes them or one adapts them alike; and,
/// per target (`Target as usize`, empty where none is adapted), its LoRA input x·Aᵀ (N, r):
/// one arena, where the targets that read one input (q, k, v; gate, up) have equal parts, so
/// that one launch writes theirs.
struct LayerActs {
    tensors: LayerTensors,
    /// (N, NH·HS), (N, NKV·HS) twice: q, k and v as projected; q and k then rotated in place
    /// where no per-head norm comes between (else kept as they were projected, before their
    /// norms, and rotated into `tensors.q_rot`, `k_rot`).
    qkv: StackedParts,
    /// (N, FF) twice: gate's and up's outputs.
    gate_up: StackedParts,
    lora_h: Arena,
    /// `lora_h`'s parts of q to v, and of gate to up, each as one view where they have parts:
    /// their x·Aᵀ as blocks of one binding, the term of the stacked launch.
    qkv_h: Option<GpuBuffer>,
    gate_up_h: Option<GpuBuffer>,
    /// Whether per-head norms come between q's and k's projections and rope (Qwen3).
    qk_norm: bool,
}

impl LayerActs {
    /// q as attention reads it: rotated (after its head norm).
    fn rotated_q(&self) -> &GpuBuffer {
        if self.qk_norm { &self.tensors.q_rot } else { &self.qkv.views[0] }
    }

    fn rotated_k(&self) -> &GpuBuffer {
        if self.qk_norm { &self.tensors.k_rot } else { &self.qkv.views[1] }
    }

    fn v(&self) -> &GpuBuffer {
        &self.qkv.views[2]
    }
}

impl std::ops::Deref for LayerActs {
    type Target = LayerTensors;
    fn deref(&self) -> &LayerTensors {
        &self.tensors
    }
}

/// What a [`TrainPass`] allocates for micro-batches of N tokens, as sizes: the one table
/// that both the allocation and the memory estimates read.
pub(crate) struct PassLayout {
    layer: LayerActSizes,
    /// N·r per target, for the targets some layer adapts (r: the largest rank of the targets
    /// that read its input).
    lora_h: [Option<usize>; Target::COUNT],
    /// Layers whose activations are kept: L, or 1 with checkpointing.
    slots: usize,
    /// (L+1) × N·C: each layer's input, and the last layer's output.
    xs: usize,
    scratch: ScratchSizes,
    /// (N) u32 twice: the tokens' segment ids and positions, in one buffer where attention's
    /// backward kernels read both ([`Segments::with_pos`]).
    seg_pos: [usize; 2],
    /// (N, NH·HS), (N, NKV·HS) twice: q's, k's and v's output gradients ([`StackedParts`]).
    dqkv: [usize; 3],
    /// (N, FF) twice: gate's and up's.
    dgate_up: [usize; 2],
    /// Per slot: q's, k's and v's outputs, gate's and up's ([`LayerActs`]).
    qkv: [usize; 3],
    gate_up: [usize; 2],
    /// (N, largest rank) thrice: LoRA's dh of each target that reads an input.
    lora_dh: [usize; 3],
    /// The head's per-token buffers, in [`HeadPart`] order ([`HeadRows`]).
    head: [usize; HeadPart::COUNT],
    /// R: logits rows per cross-entropy pass.
    rows: usize,
}

impl PassLayout {
    /// `ranks`: the largest rank per target (None: not adapted); `binding_limit`: the
    /// model's storage binding limit, which splits the lm_head and the logits.
    pub(crate) fn new(cfg: &Config, n: usize, ranks: [Option<usize>; Target::COUNT], checkpointing: bool, binding_limit: u64) -> Self {
        let (c, ff, qd, kvd, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.q_dim(), cfg.kv_dim(), cfg.vocab_size);
        let max_rank = ranks.iter().flatten().copied().max().unwrap_or(0);
        let (part_rows, split) = lm_head_parts(cfg, binding_limit);
        let rows = head_rows(n, v, binding_limit);
        PassLayout {
            layer: LayerActSizes {
                xn1: n * c,
                rstd1: n,
                rstd_q: if cfg.qk_norm { n * cfg.n_heads } else { 0 },
                rstd_k: if cfg.qk_norm { n * cfg.n_kv_heads } else { 0 },
                q_rot: if cfg.qk_norm { n * qd } else { 0 },
                k_rot: if cfg.qk_norm { n * kvd } else { 0 },
                att: n * qd,
                stats: cfg.n_heads * n * 2,
                o_out: if cfg.post_norms { n * c } else { 0 },
                rstd_po: if cfg.post_norms { n } else { 0 },
                x_mid: n * c,
                xn2: n * c,
                rstd2: n,
                h: n * ff,
                down_out: if cfg.post_norms { n * c } else { 0 },
                rstd_pf: if cfg.post_norms { n } else { 0 },
            },
            lora_h: Target::EVERY.map(|t| {
                let input = Target::EVERY.iter().filter(|u| u.fused() == t.fused()).filter_map(|&u| ranks[u as usize]).max();
                ranks[t as usize].and(input).map(|r| n * r)
            }),
            slots: if checkpointing { 1 } else { cfg.n_layers },
            xs: n * c,
            scratch: ScratchSizes {
                runs: 3 * n,
                q: if cfg.qk_norm { n * qd } else { 0 },
                k: if cfg.qk_norm { n * kvd } else { 0 },
                proj: n * c,
                rstdf: n,
                dres: n * c,
                dtmp: n * c,
                dh: n * ff,
                datt: n * qd,
                dq_step: if cfg.qk_norm { n * qd } else { 0 },
                dk_step: if cfg.qk_norm { n * kvd } else { 0 },
                row_targets: rows,
                row_weights: rows,
                logits: rows * v,
                dlogits: rows * v,
                vocab_part: if split { rows * part_rows } else { 1 },
                losses: rows,
                kept_ids: n.next_multiple_of(4),
                kept_at: n.next_multiple_of(4),
            },
            seg_pos: [n; 2],
            dqkv: [n * qd, n * kvd, n * kvd],
            dgate_up: [n * ff; 2],
            qkv: [n * qd, n * kvd, n * kvd],
            gate_up: [n * ff; 2],
            lora_dh: [n * max_rank; 3],
            head: HeadPart::ALL.map(|p| match p {
                HeadPart::Xnf | HeadPart::Dxn | HeadPart::Kept => n * c,
                HeadPart::Targets | HeadPart::Weights | HeadPart::Losses => n,
            }),
            rows,
        }
    }

    /// Bytes of the activations, the LoRA inputs, the layer inputs and the scratch (not the
    /// gradients, which are the adapter's size).
    pub(crate) fn bytes(&self, n_layers: usize) -> u64 {
        let bytes = |parts: &[usize]| -> u64 { parts.iter().map(|&n| pooled_bytes(4 * n.max(1) as u64)).sum() };
        let lora: u64 = self.lora_h.iter().flatten().map(|&n| pooled_bytes(4 * n.max(1) as u64)).sum();
        let groups = bytes(&self.seg_pos) + bytes(&self.dqkv) + bytes(&self.dgate_up) + bytes(&self.lora_dh) + bytes(&self.head);
        self.slots as u64 * (self.layer.bytes() + bytes(&self.qkv) + bytes(&self.gate_up) + lora) + (n_layers as u64 + 1) * pooled_bytes(4 * self.xs as u64) + self.scratch.bytes() + groups
    }
}

/// The LoRA weight gradients' split reductions, summed once per layer. Over the thousands of
/// tokens of a micro-batch, a gradient of LoRA's size (r × in, out × r) is a few tiles, so the
/// tiled kernels split its reduction into parts and sum them: a second launch for each of the
/// 14 gradients of a layer with all seven targets. Here the parts of all of a layer's
/// gradients go into one scratch laid out as the layer's region of the gradient arena, and
/// one launch sums them into the region.
struct GradSums {
    /// `splits` × `len` floats: part s of the layer's region at s·len; zero where no
    /// gradient lies (nothing writes there), so the region's gaps stay zero.
    parts: Arc<GpuBuffer>,
    /// Per layer, where its region starts in the arena's buffer (bytes); None for a layer
    /// the adapter leaves alone.
    starts: Vec<Option<u64>>,
    /// Floats in a layer's region (every layer's region has the same layout).
    len: usize,
}

impl GradSums {
    /// For micro-batches of up to `max_tokens` tokens; None where the kernels do not split
    /// the gradients' reductions, or where the layers' regions differ in layout (layers that
    /// differ in targets or ranks), or where the parts would pass the binding limit.
    fn new(ctx: &GpuContext, lora: &LoraLayout, arena: &Arena, max_tokens: usize) -> Result<Option<Self>> {
        let Some(splits) = weight_grad_splits(ctx, max_tokens) else { return Ok(None) };
        let mut starts = vec![None; lora.layers.len()];
        let mut layout: Option<Vec<(u64, u64)>> = None;
        for (parts, start) in lora.layers.iter().zip(starts.iter_mut()).filter(|(parts, _)| !parts.is_empty()) {
            // (offset in the region, bytes) of each of the layer's dA and dB
            let at = arena.views[parts.start].offset();
            let parts: Vec<(u64, u64)> = arena.views[parts.clone()].iter().map(|v| (v.offset() - at, v.len_bytes())).collect();
            if *layout.get_or_insert_with(|| parts.clone()) != parts {
                return Ok(None);
            }
            *start = Some(at);
        }
        let Some(&(last_at, last_len)) = layout.as_ref().and_then(|l| l.last()) else { return Ok(None) };
        let len = ((last_at + last_len) / 4) as usize;
        if (splits * len * 4) as u64 > ctx.limits().max_storage_buffer_binding_size {
            return Ok(None);
        }
        let parts = ctx.alloc_f32(splits * len)?;
        ctx.zero(&parts);
        // an Arc, as the arena's (wgpu's buffers are not Send on the web anyway)
        #[allow(clippy::arc_with_non_send_sync)]
        let parts = Arc::new(parts);
        Ok(Some(GradSums { parts, starts, len }))
    }
}

/// Where a weight gradient `g` goes: into the layer's parts where it has them (see
/// `TrainPass::layer_parts`), else into `g`.
fn grad_dest<'a>(parts: Option<(&'a GradSums, u64, usize)>, g: &'a GpuBuffer) -> GradDest<'a> {
    match parts {
        Some((sums, at, splits)) => GradDest::Parts(SplitParts { parts: &sums.parts, at: g.offset() - at, stride: sums.len, splits }),
        None => GradDest::Grad(g),
    }
}

pub struct TrainPass {
    /// N: the most tokens a micro-batch may hold.
    pub max_tokens: usize,
    pub checkpointing: bool,
    /// R: logits rows per cross-entropy pass.
    rows: usize,
    xs: Vec<GpuBuffer>, // (L+1) × (N, C): each layer's input, and the last layer's output
    acts: Vec<LayerActs>, // L, or 1 with checkpointing
    s: Scratch,
    /// The tokens' segment ids and positions, and both as one view where they lie in one
    /// buffer (as attention's backward reads them: [`Segments::with_pos`]).
    seg_pos: StackedParts,
    seg_pos_span: Option<GpuBuffer>,
    dqkv: StackedParts,
    dgate_up: StackedParts,
    lora_dh: StackedParts,
    head: HeadRows,
    /// (dA, dB) per adapter tensor, in the adapter's order: views of `grad_arena`.
    pub grads: Vec<(GpuBuffer, GpuBuffer)>,
    /// Per input group of the adapter (`GpuAdapter::shared`), its members' dA's as one matrix
    /// (they lie back to back, as their A's do).
    group_grads: Vec<GpuBuffer>,
    /// Per adapter tensor, a fused layer's parts and their rows of dB (empty otherwise).
    grad_parts: Vec<Vec<(Target, GpuBuffer)>>,
    /// The gradients in one buffer, laid out as the adapter's weights (`lora_parts`); the
    /// gaps between them stay zero (nothing writes them), as the optimizer's launches over
    /// the whole buffer need.
    pub grad_arena: Option<Arena>,
    /// Whether the backward running now adds into `grads` (see `forward_backward`).
    accumulate_grads: bool,
    /// Where the kernels split the gradients' reductions: their parts, summed per layer.
    grad_sums: Option<GradSums>,
    /// The lengths of the micro-batch's examples, in the order `s.runs` holds them.
    run_lens: Vec<u32>,
    /// The micro-batch's tokens that the head computes.
    head_tokens: HeadTokens,
}

/// Bytes a [`TrainPass`] allocates for micro-batches of `n` tokens with LoRA of rank
/// `rank` on `targets` (for memory estimates; the same table as the allocation).
pub fn activation_bytes(cfg: &Config, n: usize, rank: usize, targets: &[Target], checkpointing: bool, binding_limit: u64) -> u64 {
    // the targets as the model has its layers (fused for Phi-3)
    let targets = Target::for_model(targets, cfg).unwrap_or_else(|_| targets.to_vec());
    let ranks = Target::EVERY.map(|t| targets.contains(&t).then_some(rank));
    PassLayout::new(cfg, n.max(1), ranks, checkpointing, binding_limit).bytes(cfg.n_layers)
}

impl TrainPass {
    /// Buffers for micro-batches of up to `max_tokens` tokens on `model` (with its adapter,
    /// whose gradients this pass computes; without one the pass can only evaluate).
    pub fn new(ctx: &GpuContext, model: &Model, max_tokens: usize, checkpointing: bool) -> Result<Self> {
        let cfg = &model.cfg;
        let n = max_tokens.max(1);
        let f = |len: usize| ctx.alloc_f32(len.max(1));
        let adapter = model.adapter.as_ref();
        let ranks = Target::EVERY.map(|t| adapter.and_then(|a| a.adapter.tensors.iter().filter(|x| x.target == t).map(|x| x.rank).max()));
        let layout = PassLayout::new(cfg, n, ranks, checkpointing, model.binding_limit);
        let acts = (0..layout.slots)
            .map(|_| {
                let lora_h = ctx.alloc_arena(&layout.lora_h.map(|n| n.unwrap_or(0)))?;
                // from the first adapted of `targets` to the last, where two or more are
                let span = |targets: &[Target]| {
                    let adapted: Vec<usize> = targets.iter().map(|&t| t as usize).filter(|&t| layout.lora_h[t].is_some()).collect();
                    (adapted.len() > 1).then(|| GpuBuffer::spanning(&lora_h.whole, &lora_h.views[adapted[0]], &lora_h.views[adapted[adapted.len() - 1]]))
                };
                let (qkv_h, gate_up_h) = (span(&[Target::Q, Target::K, Target::V]), span(&[Target::Gate, Target::Up]));
                Ok(LayerActs {
                    tensors: LayerTensors::alloc(ctx, &layout.layer)?,
                    qkv: StackedParts::alloc(ctx, &layout.qkv)?,
                    gate_up: StackedParts::alloc(ctx, &layout.gate_up)?,
                    lora_h,
                    qkv_h,
                    gate_up_h,
                    qk_norm: cfg.qk_norm,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let s = Scratch::alloc(ctx, &layout.scratch)?;
        let grad_arena = adapter.map(|a| ctx.alloc_arena(&a.layout.sizes)).transpose()?;
        let (mut grads, mut grad_parts, mut group_grads) = (Vec::new(), Vec::new(), Vec::new());
        if let (Some(a), Some(g)) = (adapter, &grad_arena) {
            for (i, t) in a.adapter.tensors.iter().enumerate() {
                let (da, db) = (a.layout.a[i], a.layout.b[i]);
                grads.push((g.view(da), g.view(db)));
                grad_parts.push(if t.target.is_fused() { fused_part_views(ctx, g, db, t.target, t.rank, cfg)? } else { Vec::new() });
            }
            group_grads = a.shared.iter().map(|s| GpuBuffer::spanning(&g.whole, &grads[s.members[0]].0, &grads[*s.members.last().expect("a group")].0)).collect();
        }
        let grad_sums = match (adapter, &grad_arena) {
            (Some(a), Some(g)) => GradSums::new(ctx, &a.layout, g, n)?,
            _ => None,
        };
        let seg_pos = StackedParts::alloc(ctx, &layout.seg_pos)?;
        Ok(TrainPass {
            max_tokens: n,
            checkpointing,
            rows: layout.rows,
            xs: (0..=cfg.n_layers).map(|_| f(layout.xs)).collect::<Result<_>>()?,
            acts,
            s,
            seg_pos_span: seg_pos.span(0, 1),
            seg_pos,
            dqkv: StackedParts::alloc(ctx, &layout.dqkv)?,
            dgate_up: StackedParts::alloc(ctx, &layout.dgate_up)?,
            lora_dh: StackedParts::alloc(ctx, &layout.lora_dh)?,
            head: HeadRows::alloc(ctx, &layout.head)?,
            grads,
            group_grads,
            grad_parts,
            grad_arena,
            accumulate_grads: false,
            grad_sums,
            run_lens: Vec::new(),
            head_tokens: HeadTokens::All,
        })
    }

    /// Σ NLL over the counted tokens of `batch`, without gradients (evaluation).
    pub async fn forward_loss(&mut self, ctx: &GpuContext, model: &Model, batch: &TokenBatch) -> Result<f64> {
        Ok(self.forward_token_losses(ctx, model, batch).await?.iter().map(|&x| x as f64).sum())
    }

    /// Each token's NLL (0 where it carries no loss), without gradients: a preference
    /// loss's reference, and its evaluation.
    pub async fn forward_token_losses(&mut self, ctx: &GpuContext, model: &Model, batch: &TokenBatch) -> Result<Vec<f32>> {
        self.run(ctx, model, batch, None, Dropout::OFF).await
    }

    /// Σ NLL over the counted tokens of `batch`, and the LoRA gradients of
    /// `loss_scale`·Σ NLL in `grads`: added to what they hold with `accumulate` (the later
    /// micro-batches of a step), else replacing it (the first: no zeroing needed).
    pub async fn forward_backward(&mut self, ctx: &GpuContext, model: &Model, batch: &TokenBatch, loss_scale: f32, dropout: Dropout, accumulate: bool) -> Result<f64> {
        let losses = self.train(ctx, model, batch, TokenWeights::Uniform(loss_scale), dropout, accumulate).await?;
        Ok(losses.iter().map(|&x| x as f64).sum())
    }

    /// Each token's NLL, and the LoRA gradients of a loss that is any function of them:
    /// `weights_of` maps the NLLs to ∂loss/∂(each NLL), known only once the forward has run
    /// (a preference loss weighs each sequence by how it compares with its pair). Gradients
    /// accumulate as in [`TrainPass::forward_backward`].
    pub async fn forward_backward_weighted(
        &mut self,
        ctx: &GpuContext,
        model: &Model,
        batch: &TokenBatch,
        weights_of: &mut dyn FnMut(&[f32]) -> Vec<f32>,
        dropout: Dropout,
        accumulate: bool,
    ) -> Result<Vec<f32>> {
        self.train(ctx, model, batch, TokenWeights::FromLosses(weights_of), dropout, accumulate).await
    }

    async fn train(&mut self, ctx: &GpuContext, model: &Model, batch: &TokenBatch, weights: TokenWeights<'_>, dropout: Dropout, accumulate: bool) -> Result<Vec<f32>> {
        if model.adapter.is_none() || self.grads.is_empty() {
            return Err(Error::Shape("training needs an adapter on the model before the TrainPass is made".into()));
        }
        self.accumulate_grads = accumulate;
        self.run(ctx, model, batch, Some(weights), dropout).await
    }

    async fn run(&mut self, ctx: &GpuContext, model: &Model, batch: &TokenBatch, backward: Option<TokenWeights<'_>>, drop: Dropout) -> Result<Vec<f32>> {
        let n = batch.len();
        if n == 0 || n > self.max_tokens {
            return Err(Error::Shape(format!("a micro-batch of {n} tokens; this pass holds 1 to {}", self.max_tokens)));
        }
        model.upload_embeddings(ctx, &self.xs[0], &batch.tokens)?;
        ctx.write_bytes(self.pos(), bytemuck::cast_slice(&batch.pos));
        ctx.write_bytes(&self.seg_pos.views[0], bytemuck::cast_slice(&batch.seg));
        let (runs, lens) = segment_runs(&batch.seg, n)?;
        ctx.write_bytes(&self.s.runs, bytemuck::cast_slice(&runs));
        self.run_lens = lens;
        self.head_tokens = HeadTokens::of(&batch.targets);
        if let HeadTokens::Kept(kept) = &self.head_tokens {
            let rows: Vec<u32> = kept.iter().map(|&i| i as u32).collect();
            let mut row_of = vec![kept.len() as u32; n];
            for (j, &i) in kept.iter().enumerate() {
                row_of[i] = j as u32;
            }
            ctx.write_f32(&self.s.kept_ids, &token_ids(&rows));
            ctx.write_f32(&self.s.kept_at, &token_ids(&row_of));
        }
        ctx.write_bytes(self.head.get(HeadPart::Targets), bytemuck::cast_slice(&self.head_tokens.select(&batch.targets)));
        let layers = model.cfg.n_layers;
        for i in 0..layers {
            self.layer_forward(ctx, model, i, n, drop)?;
        }
        let losses = match backward {
            None => {
                self.head(ctx, model, n, false)?;
                return self.losses(ctx, n).await;
            }
            Some(TokenWeights::Uniform(scale)) => {
                ctx.write_f32(self.head.get(HeadPart::Weights), &vec![scale; self.head_tokens.rows(n)]);
                self.head(ctx, model, n, true)?;
                None
            }
            Some(TokenWeights::FromLosses(weights_of)) => {
                // the losses first; the head runs again with the weights they give
                self.head(ctx, model, n, false)?;
                let losses = self.losses(ctx, n).await?;
                let w = weights_of(&losses);
                if w.len() != n {
                    return Err(Error::Shape(format!("{} token weights for {n} tokens", w.len())));
                }
                ctx.write_f32(self.head.get(HeadPart::Weights), &self.head_tokens.select(&w));
                self.head(ctx, model, n, true)?;
                Some(losses)
            }
        };
        for i in (0..layers).rev() {
            if self.checkpointing {
                self.layer_forward(ctx, model, i, n, drop)?;
            }
            self.layer_backward(ctx, model, i, n, drop)?;
        }
        match losses {
            Some(l) => {
                ctx.take_device_error()?;
                Ok(l)
            }
            None => self.losses(ctx, n).await,
        }
    }

    /// The NLL of each of the `n` tokens the head last ran (0 where it has no target).
    async fn losses(&self, ctx: &GpuContext, n: usize) -> Result<Vec<f32>> {
        let rows = self.head_tokens.rows(n);
        let losses = if rows == 0 { ctx.finish().await?; Vec::new() } else { ctx.read_f32_prefix(self.head.get(HeadPart::Losses), rows).await? };
        ctx.take_device_error()?;
        Ok(self.head_tokens.spread(losses, n))
    }

    fn segments(&self) -> Segments<'_> {
        let (seg, pos) = (&self.seg_pos.views[0], self.pos());
        let with_pos = self.seg_pos_span.as_ref().map(|both| (both, ((pos.offset() - seg.offset()) / 4) as usize));
        Segments { ids: seg, runs: &self.s.runs, lens: &self.run_lens, with_pos }
    }

    /// The tokens' positions (rope's).
    fn pos(&self) -> &GpuBuffer {
        &self.seg_pos.views[1]
    }

    fn slot(&self, i: usize) -> &LayerActs {
        &self.acts[if self.checkpointing { 0 } else { i }]
    }

    fn dims(model: &Model, i: usize, n: usize) -> (RopeDims, AttentionDims) {
        (rope_dims(&model.cfg, i, n), attention_dims(&model.cfg, i, n))
    }

    /// out = inp·Wᵀ (+ bias) (+ scale·(dropout(inp)·Aᵀ)·Bᵀ, keeping x·Aᵀ in `h`), combined with
    /// what out holds as `acc` says.
    #[allow(clippy::too_many_arguments)]
    fn project(&self, ctx: &GpuContext, model: &Model, i: usize, target: Target, out: &GpuBuffer, inp: &GpuBuffer, n: usize, acc: Accumulate, acts: &LayerActs, drop: Dropout) -> Result<()> {
        let layer = &model.layers[i];
        let Some((adapter, u)) = model.adapted(i, target) else {
            return layer.base_forward(ctx, target, out, inp, n, acc, None);
        };
        let lora = &adapter.tensors[u.index];
        let dropout = (drop.p, drop.seed_for(u.seed_index));
        let (b, d) = match u.part {
            None => (&lora.b, LoraDims { dropout, ..lora.dims(n) }),
            Some(p) => (&lora.parts[p.index].1, LoraDims { dropout, ..lora.part_dims(n, p.rows) }),
        };
        let h_part = |i: usize| adapter.adapter.tensors[i].target as usize;
        adapter.lora_down(ctx, u, inp, &acts.lora_h, &h_part, d)?;
        let h = &acts.lora_h.views[h_part(u.index)];
        layer.base_forward(ctx, target, out, inp, n, acc, Some(lora_up_term(h, b, d)))
    }

    /// dinp = beta·dinp + dout·W (+ the adapter's part), and the adapter's dA, dB.
    #[allow(clippy::too_many_arguments)]
    fn project_backward(&self, ctx: &GpuContext, model: &Model, i: usize, target: Target, dinp: &GpuBuffer, beta: f32, dout: &GpuBuffer, inp: &GpuBuffer, n: usize, acts: &LayerActs, drop: Dropout) -> Result<()> {
        let base = model.layers[i].linear(target);
        let Some((adapter, u)) = model.adapted(i, target) else {
            return base.backward_input(ctx, dinp, dout, n, beta, None);
        };
        let lora = &adapter.tensors[u.index];
        let dh = &self.lora_dh.views[0];
        let d = match u.part {
            // a fused layer: each part adds its rows' dB and its share of dh (which the parts'
            // backwards, run one after another, add up); the last finishes dA and dx
            Some(p) => {
                let d = self.lora_dims(model, u, n, drop);
                let (parts, h) = (self.layer_parts(ctx, i, n), self.lora_input(model, u.index, acts));
                let db_part = &self.grad_parts[u.index][p.index].1;
                lora_backward_b(ctx, grad_dest(parts, db_part), dh, if p.first { 0.0 } else { 1.0 }, dout, h, &lora.parts[p.index].1, LoraDims { d_out: p.rows, ..d })?;
                if !p.last {
                    return base.backward_input(ctx, dinp, dout, n, beta, None);
                }
                lora_grad_a(ctx, grad_dest(parts, &self.grads[u.index].0), dh, inp, d)?;
                d
            }
            None => self.lora_grads(ctx, model, i, u, dh, dout, inp, n, acts, drop)?,
        };
        // dx: the base's part, with the LoRA path's as its low-rank term
        base.backward_input(ctx, dinp, dout, n, beta, Some(lora_input_term(dh, &lora.a, d)))
    }

    /// The dims of the LoRA tensor `u` tells of, for this backward: its gradients added to or
    /// replaced as `accumulate_grads` says, and the forward's dropout mask (same seed: A saw
    /// dropout(x), and only the kept inputs receive the LoRA path's gradient).
    fn lora_dims(&self, model: &Model, u: LoraUse, n: usize, drop: Dropout) -> LoraDims {
        let lora = &model.adapter.as_ref().expect("an adapted layer").tensors[u.index];
        LoraDims { accumulate: self.accumulate_grads, dropout: (drop.p, drop.seed_for(u.seed_index)), ..lora.dims(n) }
    }

    /// The forward's x·Aᵀ of adapter tensor `index`.
    fn lora_input<'a>(&self, model: &Model, index: usize, acts: &'a LayerActs) -> &'a GpuBuffer {
        &acts.lora_h.views[model.adapter.as_ref().expect("an adapted layer").adapter.tensors[index].target as usize]
    }

    /// The gradients of the LoRA tensor `u` tells of (adapting one target alone) from its
    /// output's gradient `dout`: dB, dh = scale·dout·B into `dh`, and dA. Returns its dims.
    #[allow(clippy::too_many_arguments)]
    fn lora_grads(&self, ctx: &GpuContext, model: &Model, i: usize, u: LoraUse, dh: &GpuBuffer, dout: &GpuBuffer, inp: &GpuBuffer, n: usize, acts: &LayerActs, drop: Dropout) -> Result<LoraDims> {
        let d = self.lora_grad_b(ctx, model, i, u, dh, dout, n, acts, drop)?;
        lora_grad_a(ctx, grad_dest(self.layer_parts(ctx, i, n), &self.grads[u.index].0), dh, inp, d)?;
        Ok(d)
    }

    /// [`Self::lora_grads`] but dA: dB and dh. Returns the tensor's dims.
    #[allow(clippy::too_many_arguments)]
    fn lora_grad_b(&self, ctx: &GpuContext, model: &Model, i: usize, u: LoraUse, dh: &GpuBuffer, dout: &GpuBuffer, n: usize, acts: &LayerActs, drop: Dropout) -> Result<LoraDims> {
        let lora = &model.adapter.as_ref().expect("an adapted layer").tensors[u.index];
        let d = self.lora_dims(model, u, n, drop);
        let db = grad_dest(self.layer_parts(ctx, i, n), &self.grads[u.index].1);
        lora_backward_b(ctx, db, dh, 0.0, dout, self.lora_input(model, u.index, acts), &lora.b, d)?;
        Ok(d)
    }

    /// [`Self::lora_grad_b`] of the first two of `uses` (adapted targets of one input: their
    /// places in `douts`, their LoRA) in one batch, their dh's into lora_dh's parts `slot` and
    /// `slot + 1`, where they are of one shape with their B's back to back, and their buffers
    /// lie in order in one arena each: their dims, or None (nothing recorded).
    #[allow(clippy::too_many_arguments)]
    fn lora_grad_b_pair(&self, ctx: &GpuContext, model: &Model, i: usize, uses: &[(usize, LoraUse)], slot: usize, douts: &StackedParts, n: usize, acts: &LayerActs, drop: Dropout) -> Result<Option<LoraDims>> {
        let (Some(&(t0, u0)), Some(&(t1, u1)), Some(adapter)) = (uses.first(), uses.get(1), model.adapter.as_ref()) else { return Ok(None) };
        let (l0, l1) = (&adapter.tensors[u0.index], &adapter.tensors[u1.index]);
        let ((_, db0), (_, db1)) = (&self.grads[u0.index], &self.grads[u1.index]);
        let parts = self.layer_parts(ctx, i, n);
        let d = self.lora_dims(model, u0, n, drop);
        let after = |x: &GpuBuffer, y: &GpuBuffer| x.offset() + x.len_bytes() == y.offset();
        let alike = (l0.d_out, l0.rank, l0.scale) == (l1.d_out, l1.rank, l1.scale) && u0.part.is_none() && u1.part.is_none() && after(&l0.b, &l1.b) && after(db0, db1);
        let (h0, h1) = (self.lora_input(model, u0.index, acts), self.lora_input(model, u1.index, acts));
        let stride = |x: &GpuBuffer, y: &GpuBuffer| (y.offset() > x.offset()).then(|| ((y.offset() - x.offset()) / 4) as usize);
        let (dh0, dh1) = (&self.lora_dh.views[slot], &self.lora_dh.views[slot + 1]);
        let strides = [stride(&douts.views[t0], &douts.views[t1]), stride(h0, h1), stride(dh0, dh1)];
        let (Some(dy), Some(dh), [Some(dy_stride), Some(h_stride), Some(dh_stride)], true) = (douts.span(t0, t1), self.lora_dh.span(slot, slot + 1), strides, alike) else {
            return Ok(None);
        };
        let h = GpuBuffer::spanning(&acts.lora_h.whole, h0, h1);
        let b = GpuBuffer::spanning(&adapter.params.whole, &l0.b, &l1.b);
        let db_span;
        let db = match parts {
            Some(_) => grad_dest(parts, db0),
            None => {
                db_span = GpuBuffer::spanning(&self.grad_arena.as_ref().expect("gradients").whole, db0, db1);
                GradDest::Grad(&db_span)
            }
        };
        lora_backward_b_batched(ctx, db, &dh, &dy, &h, &b, 2, [dy_stride, h_stride, dh_stride], d)?;
        Ok(Some(d))
    }

    /// dinp = the input gradient of `targets`, which read one input (q, k, v; gate, up), from
    /// their output gradients (`douts`' parts, in target order), and their LoRA gradients. One
    /// launch over the layer's `stacked` weight reads the parts in blocks where they lie, with
    /// the LoRA terms of the adapted targets as one term over their A's back to back (their dh
    /// in blocks too), where the kernels read blocks (the tiled ones) and the adapter adapts
    /// the targets alone, one of them or several as one group (equal ranks); else one launch
    /// per target.
    #[allow(clippy::too_many_arguments)]
    fn inputs_backward(&self, ctx: &GpuContext, model: &Model, i: usize, targets: &[Target], stacked: Option<&Linear>, dinp: &GpuBuffer, douts: &StackedParts, inp: &GpuBuffer, n: usize, acts: &LayerActs, drop: Dropout) -> Result<()> {
        let widths: Vec<usize> = targets.iter().map(|&t| model.layers[i].linear(t).shape().0).collect();
        // (the target's place in `targets`, its LoRA) for each adapted target
        let uses: Vec<(usize, LoraUse)> = targets.iter().enumerate().filter_map(|(t, &target)| model.adapted(i, target).map(|(_, u)| (t, u))).collect();
        let group = model.adapter.as_ref().and_then(|a| a.group_of(&uses.iter().map(|&(_, u)| u).collect::<Vec<_>>()));
        let alone = uses.iter().all(|(_, u)| u.part.is_none()) && (uses.len() < 2 || group.is_some());
        let rank = uses.first().map_or(0, |(_, u)| model.adapter.as_ref().expect("adapted").tensors[u.index].rank);
        let plan = stacked.filter(|w| alone && w.takes_input_blocks(ctx, n)).zip(douts.blocks(&widths));
        let dh_blocks = if uses.len() > 1 { self.lora_dh.blocks(&vec![rank; uses.len()]) } else { None };
        let Some((w, (dout, blocks))) = plan.filter(|_| uses.len() < 2 || dh_blocks.is_some()) else {
            for (t, &target) in targets.iter().enumerate() {
                self.project_backward(ctx, model, i, target, dinp, if t == 0 { 0.0 } else { 1.0 }, &douts.views[t], inp, n, acts, drop)?;
            }
            return Ok(());
        };
        // each adapted target's dB and dh (into its part of lora_dh, in target order), two of
        // one shape at once where they can be
        let (mut dims, mut slot) = (None, 0);
        while slot < uses.len() {
            if let Some(d) = self.lora_grad_b_pair(ctx, model, i, &uses[slot..], slot, douts, n, acts, drop)? {
                (dims, slot) = (Some(d), slot + 2);
                continue;
            }
            let (t, u) = uses[slot];
            dims = Some(self.lora_grad_b(ctx, model, i, u, &self.lora_dh.views[slot], &douts.views[t], n, acts, drop)?);
            slot += 1;
        }
        // their dA's (a group's in one product, its dh's as blocks), and their LoRA paths' part
        // of dx: Σ dh·A, under the mask they share
        let parts = self.layer_parts(ctx, i, n);
        let term = match (dims, group, &dh_blocks) {
            (None, ..) => None,
            (Some(d), Some(g), Some((h, h_blocks))) => {
                let s = uses[0].1.shared.expect("a group's member").group;
                lora_grad_a_shared(ctx, grad_dest(parts, &self.group_grads[s]), h, *h_blocks, inp, d)?;
                Some(LowRankTerm { h, v: &g.a, rank: uses.len() * rank, scale: 1.0, dropout: d.dropout, layout: TermLayout::Blocks(*h_blocks) })
            }
            (Some(d), ..) => {
                let (dh, u) = (&self.lora_dh.views[0], uses[0].1);
                lora_grad_a(ctx, grad_dest(parts, &self.grads[u.index].0), dh, inp, d)?;
                Some(lora_input_term(dh, &model.adapter.as_ref().expect("adapted").tensors[u.index].a, d))
            }
        };
        w.backward_input_blocked(ctx, dinp, &dout, blocks, n, 0.0, term)
    }

    /// The LoRA of the targets `stacking` tells of (adapted alike) as their stacked launch's
    /// term, after recording their x·Aᵀ from `inp` into their parts of the slot's lora_h (`h`:
    /// those parts as one view).
    #[allow(clippy::too_many_arguments)]
    fn stacked_term<'a>(&self, ctx: &GpuContext, model: &'a Model, stacking: Stacking<'a>, h: &'a GpuBuffer, inp: &GpuBuffer, n: usize, acts: &LayerActs, drop: Dropout) -> Result<LowRankTerm<'a>> {
        let (adapter, Stacking::Adapted(s)) = (model.adapter.as_ref().expect("an adapted layer"), stacking) else {
            unreachable!("a stacked launch's term where no group adapts its targets")
        };
        let d = LoraDims { dropout: (drop.p, drop.seed_for(s.first.seed_index)), ..adapter.tensors[s.first.index].dims(n) };
        adapter.stacked_term(ctx, s, inp, &acts.lora_h, &|t| adapter.adapter.tensors[t].target as usize, h, d)
    }

    /// Layer i from xs[i] to xs[i+1], keeping its activations in its slot.
    fn layer_forward(&self, ctx: &GpuContext, model: &Model, i: usize, n: usize, drop: Dropout) -> Result<()> {
        let (a, s) = (self.slot(i), &self.s);
        // without head norms, q and k are rotated where they were projected
        let (q, k) = if a.qk_norm { (&s.q, &s.k) } else { (&a.qkv.views[0], &a.qkv.views[1]) };
        let b = BlockBuffers {
            x: &self.xs[i],
            x_mid: Some(&a.x_mid),
            x_out: Some(&self.xs[i + 1]),
            xn1: &a.xn1,
            rstd1: &a.rstd1,
            xn2: &a.xn2,
            rstd2: &a.rstd2,
            q_raw: &a.qkv.views[0],
            k_raw: &a.qkv.views[1],
            rstd_q: &a.rstd_q,
            rstd_k: &a.rstd_k,
            q,
            k,
            v: a.v(),
            q_rot: a.rotated_q(),
            k_rot: a.rotated_k(),
            att: &a.att,
            proj: &s.proj,
            o_out: &a.o_out,
            down_out: &a.down_out,
            rstd_po: &a.rstd_po,
            rstd_pf: &a.rstd_pf,
            gate: &a.gate_up.views[0],
            up: &a.gate_up.views[1],
            h: &a.h,
            pos: self.pos(),
        };
        let attention = Attention::Packed { seg: self.segments(), stats: &a.stats };
        // q, k, v and gate, up each in one launch where no adapter changes them, or one
        // adapts them alike (their LoRA as its term)
        let (qkv, gate_up) = ([Target::Q, Target::K, Target::V], [Target::Gate, Target::Up]);
        let (qkv_plan, gate_up_plan) = (model.stacking(i, &qkv), model.stacking(i, &gate_up));
        let qkv_down = |inp: &GpuBuffer| self.stacked_term(ctx, model, qkv_plan, a.qkv_h.as_ref().expect("q's to v's x·Aᵀ"), inp, n, a, drop);
        let gate_up_down = |inp: &GpuBuffer| self.stacked_term(ctx, model, gate_up_plan, a.gate_up_h.as_ref().expect("gate's and up's x·Aᵀ"), inp, n, a, drop);
        let fused = Fused {
            qkv_out: qkv_plan.stacks().then_some(&a.qkv),
            qkv_out_lora: matches!(qkv_plan, Stacking::Adapted(..)).then_some(&qkv_down as &LoraDown),
            gate_up_out: gate_up_plan.stacks().then_some(&a.gate_up),
            gate_up_out_lora: matches!(gate_up_plan, Stacking::Adapted(..)).then_some(&gate_up_down as &LoraDown),
            ..Fused::default()
        };
        block_forward(ctx, &model.cfg, i, &model.layers[i], &b, n, attention, self.chain(model, i), fused, &|target, out, inp, acc| self.project(ctx, model, i, target, out, inp, n, acc, a, drop))
    }

    /// Without checkpointing, each block's last launch norms its output into the next
    /// layer's slot (xn1, rstd1), the last block's with the final norm into the head's input:
    /// a launch fewer per layer. With checkpointing the layers share one slot, which the
    /// backward's recompute of layer i would then overwrite with layer i + 1's input.
    fn chain<'a>(&'a self, model: &'a Model, i: usize) -> Chain<'a> {
        if self.checkpointing {
            return Chain::default();
        }
        let next = match (model.layers.get(i + 1), self.acts.get(i + 1)) {
            (Some(layer), Some(slot)) => NextNorm { weight: &layer.attn_norm, out: &slot.xn1, rstd: &slot.rstd1 },
            _ => NextNorm { weight: &model.final_norm, out: self.head.get(HeadPart::Xnf), rstd: &self.s.rstdf },
        };
        Chain { input_normed: i > 0, next_norm: Some(next) }
    }

    /// From dres = ∂loss/∂xs[i+1] to dres = ∂loss/∂xs[i], adding the layer's LoRA gradients.
    fn layer_backward(&self, ctx: &GpuContext, model: &Model, i: usize, n: usize, drop: Dropout) -> Result<()> {
        let cfg = &model.cfg;
        let (c, ff) = (cfg.hidden_size, cfg.intermediate_size);
        let (rope, att) = Self::dims(model, i, n);
        let (l, a, s) = (&model.layers[i], self.slot(i), &self.s);
        // through the post-MLP norm (Gemma 3) to down's output
        let d_down = match &l.post_ffn_norm {
            Some(w) => {
                rmsnorm_backward(ctx, &s.dtmp, &s.dres, &a.down_out, w, &a.rstd_pf, n, c)?;
                &s.dtmp
            }
            None => &s.dres,
        };
        self.project_backward(ctx, model, i, Target::Down, &s.dh, 0.0, d_down, &a.h, n, a, drop)?;
        let dgate_up = &self.dgate_up.views;
        gated_backward(ctx, cfg.activation, &dgate_up[0], &dgate_up[1], &s.dh, &a.gate_up.views[0], &a.gate_up.views[1], n * ff)?;
        self.inputs_backward(ctx, model, i, &[Target::Gate, Target::Up], l.gate_up.as_ref(), self.head.get(HeadPart::Dxn), &self.dgate_up, &a.xn2, n, a, drop)?;
        rmsnorm_backward_add(ctx, &s.dres, self.head.get(HeadPart::Dxn), &a.x_mid, &l.ffn_norm, &a.rstd2, n, c)?;
        let d_o = match &l.post_attn_norm {
            Some(w) => {
                rmsnorm_backward(ctx, &s.dtmp, &s.dres, &a.o_out, w, &a.rstd_po, n, c)?;
                &s.dtmp
            }
            None => &s.dres,
        };
        self.project_backward(ctx, model, i, Target::O, &s.datt, 0.0, d_o, &a.att, n, a, drop)?;
        // q's and k's gradients go back through attention and rope (one step) and the head
        // norms into dqkv's (where attention writes v's): attention writes them there, or
        // into the other pair of buffers, which the norms read
        let dqkv = &self.dqkv.views;
        let norms = l.q_norm.as_ref().zip(l.k_norm.as_ref());
        let (dq, dk) = if norms.is_some() { (&s.dq_step, &s.dk_step) } else { (&dqkv[0], &dqkv[1]) };
        let rope_grad = l.rope.then_some(RopeGrad { pos: self.pos(), dims: rope });
        attention_backward(ctx, dq, dk, &dqkv[2], &s.datt, a.rotated_q(), a.rotated_k(), a.v(), &a.att, &a.stats, self.segments(), att, rope_grad)?;
        if let Some((q_norm, k_norm)) = norms {
            rmsnorm_backward(ctx, &dqkv[0], dq, &a.qkv.views[0], q_norm, &a.rstd_q, n * cfg.n_heads, cfg.head_size)?;
            rmsnorm_backward(ctx, &dqkv[1], dk, &a.qkv.views[1], k_norm, &a.rstd_k, n * cfg.n_kv_heads, cfg.head_size)?;
        }
        let stacked = l.qkv.as_ref().map(|(w, _)| w);
        self.inputs_backward(ctx, model, i, &[Target::Q, Target::K, Target::V], stacked, self.head.get(HeadPart::Dxn), &self.dqkv, &a.xn1, n, a, drop)?;
        rmsnorm_backward_add(ctx, &s.dres, self.head.get(HeadPart::Dxn), &self.xs[i], &l.attn_norm, &a.rstd1, n, c)?;
        match (self.layer_parts(ctx, i, n), &self.grad_arena) {
            (Some((sums, at, splits)), Some(arena)) => {
                let region = GpuBuffer::view(&arena.whole, at - arena.whole.offset(), (4 * sums.len) as u64);
                let beta = if self.accumulate_grads { 1.0 } else { 0.0 };
                sum_splits(ctx, &region, &sums.parts, 1, sums.len, splits, Accumulate { alpha: 1.0, beta })
            }
            _ => Ok(()),
        }
    }

    /// Where layer i's weight gradients of a micro-batch of n tokens go as split parts: the
    /// sums, the layer's region (a byte offset in the arena's buffer) and the parts per
    /// gradient; None where they go straight into the gradients.
    fn layer_parts(&self, ctx: &GpuContext, i: usize, n: usize) -> Option<(&GradSums, u64, usize)> {
        let sums = self.grad_sums.as_ref()?;
        Some((sums, sums.starts[i]?, weight_grad_splits(ctx, n)?))
    }
}
