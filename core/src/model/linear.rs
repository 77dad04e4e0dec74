//! A frozen linear weight on the GPU, f32 or a block format; its kind picks the matmul kernel.

use crate::model::weights::{Matrix, MatrixData, WeightFormat};
use crate::ops::embedding::{embedding_forward, TableRows};
use crate::ops::matmul::{choose_tiling, forward_takes_blocks, matmul, matmul_gemv_gated, matmul_gemv_normed, matmul_low_rank, Accumulate, ColumnBlocks, InputNorm, LowRankTerm, MatmulDims, MatmulKind};
use crate::ops::matmul_quant::{self, matmul_quant, matmul_quant_blocked_input, matmul_quant_blocked_output, matmul_quant_gemv_gated, matmul_quant_gemv_normed, matmul_quant_low_rank, takes_input_blocks, GpuQuantWeight};
use crate::ops::swiglu::Activation;
use crate::quant::QuantFormat;
use crate::{GpuBuffer, GpuContext, Result};
use std::sync::Arc;

pub enum Linear {
    F32 { w: GpuBuffer, rows: usize, cols: usize },
    Quant(GpuQuantWeight),
}

impl Linear {
    pub fn upload(ctx: &GpuContext, m: &Matrix) -> Result<Self> {
        Ok(match &m.data {
            MatrixData::F32(v) => Linear::F32 { w: ctx.upload_f32(v)?, rows: m.rows, cols: m.cols },
            MatrixData::Quant(q) => Linear::Quant(GpuQuantWeight::upload(ctx, q)?),
        })
    }

    /// Weights of one format that share an input (q, k and v; gate and up), stacked by rows in
    /// one buffer, and each part as a weight of its own (a view of its rows): products with
    /// the parts run as before, and one with the whole gives all of them in one launch. None
    /// where the parts cannot share a buffer (formats or widths that differ, NF4 with its
    /// per-tensor absmax offset, parts the GPU cannot bind at their offsets, a whole past the
    /// storage binding limit): upload them apart.
    pub fn upload_stacked(ctx: &GpuContext, parts: &[&Matrix]) -> Result<Option<(Self, Vec<Self>)>> {
        let (format, cols) = (parts[0].format(), parts[0].cols);
        if format == WeightFormat::Quant(QuantFormat::Nf4) || parts.iter().any(|m| m.format() != format || m.cols != cols) {
            return Ok(None);
        }
        let bytes: Vec<&[u8]> = parts
            .iter()
            .map(|m| match &m.data {
                MatrixData::F32(v) => bytemuck::cast_slice(v),
                MatrixData::Quant(q) => q.q.as_slice(),
            })
            .collect();
        let Some(packed) = ctx.upload_packed(&bytes)? else {
            return Ok(None);
        };
        let on_rows = |w: GpuBuffer, rows: usize| match format {
            WeightFormat::F32 => Linear::F32 { w, rows, cols },
            WeightFormat::Quant(format) => Linear::Quant(GpuQuantWeight::on_buffer(format, rows, cols, w)),
        };
        let views = parts.iter().enumerate().map(|(i, m)| on_rows(packed.view(i), m.rows)).collect();
        Ok(Some((on_rows(packed.all(), parts.iter().map(|m| m.rows).sum()), views)))
    }

    /// The format its weights are held in on the GPU.
    pub fn format(&self) -> WeightFormat {
        match self {
            Linear::F32 { .. } => WeightFormat::F32,
            Linear::Quant(q) => WeightFormat::Quant(q.format),
        }
    }

    /// (rows, cols) = (out features, in features).
    pub fn shape(&self) -> (usize, usize) {
        match self {
            Linear::F32 { rows, cols, .. } => (*rows, *cols),
            Linear::Quant(q) => (q.rows, q.cols),
        }
    }

    /// The token embeddings of the `n` ids in `ids` (ops::embedding::token_ids) whose rows
    /// this weight holds (`rows` says which), into their rows of out (n, cols): a tied
    /// lm_head's rows, decoded on the GPU.
    pub fn gather(&self, ctx: &GpuContext, out: &GpuBuffer, ids: &GpuBuffer, n: usize, rows: TableRows) -> Result<()> {
        match self {
            Linear::F32 { w, rows: v, cols } => embedding_forward(ctx, out, ids, w, n, *cols, *v, rows),
            Linear::Quant(q) => matmul_quant::embedding_gather(ctx, out, ids, q, n, rows),
        }
    }

    /// out(M, rows) = inp(M, cols)·Wᵀ (+ a low-rank term: LoRA's scale·h·Bᵀ).
    pub fn forward(&self, ctx: &GpuContext, out: &GpuBuffer, inp: &GpuBuffer, m: usize, term: Option<LowRankTerm>) -> Result<()> {
        self.forward_into(ctx, out, inp, m, Accumulate::OVERWRITE, term)
    }

    /// out(M, rows) = beta·out + alpha·(inp·Wᵀ (+ the term)): with [`Accumulate::ADD`], a
    /// projection added to the residual stream it writes into.
    pub fn forward_into(&self, ctx: &GpuContext, out: &GpuBuffer, inp: &GpuBuffer, m: usize, acc: Accumulate, term: Option<LowRankTerm>) -> Result<()> {
        self.product(ctx, MatmulKind::Forward, out, inp, m, acc, term)
    }

    /// dinp(M, cols) = beta·dinp + dout(M, rows)·W (+ a low-rank term: LoRA's dh·A): the input
    /// gradient through the frozen weight (a block format is dequantized on the fly, never as
    /// a whole).
    pub fn backward_input(&self, ctx: &GpuContext, dinp: &GpuBuffer, dout: &GpuBuffer, m: usize, beta: f32, term: Option<LowRankTerm>) -> Result<()> {
        self.product(ctx, MatmulKind::BackwardInput, dinp, dout, m, Accumulate { alpha: 1.0, beta }, term)
    }

    /// Whether the input gradient of `m` rows runs here on the tiled kernels, which read
    /// the output gradient in blocks ([`Linear::backward_input_blocked`]).
    pub fn takes_input_blocks(&self, ctx: &GpuContext, m: usize) -> bool {
        match self {
            Linear::F32 { rows, cols, .. } => choose_tiling(ctx, MatmulKind::BackwardInput, &MatmulDims::new(m, *rows, *cols)).is_strided_gemm(),
            Linear::Quant(q) => takes_input_blocks(ctx, q, m),
        }
    }

    /// dinp(M, cols) = beta·dinp + dout·W (+ the term), for weights stacked by rows
    /// ([`Linear::upload_stacked`]) with dout (M, rows), the parts' output gradients, in
    /// `blocks` where the backward wrote them: the parts' input gradients summed, in one
    /// launch (where [`Linear::takes_input_blocks`]).
    #[allow(clippy::too_many_arguments)]
    pub fn backward_input_blocked(&self, ctx: &GpuContext, dinp: &GpuBuffer, dout: &GpuBuffer, blocks: ColumnBlocks, m: usize, beta: f32, term: Option<LowRankTerm>) -> Result<()> {
        match self {
            Linear::F32 { w, rows, cols } => {
                let d = MatmulDims { a_blocks: Some(blocks), ..MatmulDims::new(m, *rows, *cols) };
                f32_product(ctx, MatmulKind::BackwardInput, dinp, dout, w, d, Accumulate { alpha: 1.0, beta }, term)
            }
            Linear::Quant(q) => matmul_quant_blocked_input(ctx, dinp, dout, blocks, q, m, beta, term),
        }
    }

    /// Whether the forward of `m` rows runs here on the tiled kernels in one launch, which
    /// write the output in blocks ([`Linear::forward_blocked`]).
    pub fn takes_output_blocks(&self, ctx: &GpuContext, m: usize) -> bool {
        match self {
            Linear::F32 { rows, cols, .. } => forward_takes_blocks(ctx, &MatmulDims::new(m, *rows, *cols)),
            Linear::Quant(q) => matmul_quant::forward_takes_blocks(ctx, q, m),
        }
    }

    /// out = inp·Wᵀ (+ the term) for weights stacked by rows ([`Linear::upload_stacked`]),
    /// each part's output in its block of `out` (where the block wants it), in one launch
    /// (where [`Linear::takes_output_blocks`]).
    pub fn forward_blocked(&self, ctx: &GpuContext, out: &GpuBuffer, blocks: ColumnBlocks, inp: &GpuBuffer, m: usize, term: Option<LowRankTerm>) -> Result<()> {
        match self {
            Linear::F32 { w, rows, cols } => {
                let d = MatmulDims { c_blocks: Some(blocks), ..MatmulDims::new(m, *rows, *cols) };
                f32_product(ctx, MatmulKind::Forward, out, inp, w, d, Accumulate::OVERWRITE, term)
            }
            Linear::Quant(q) => matmul_quant_blocked_output(ctx, out, blocks, inp, q, m, term),
        }
    }

    /// out(M, rows/2) = act(inp·W_gateᵀ)·(inp·W_upᵀ) for 1 to 16 rows, where this weight holds
    /// gate's rows then up's ([`Linear::upload_stacked`]): one launch on GPUs for what
    /// otherwise takes two matmuls and the activation; with `norm`, of inp's rows normed as
    /// they are read (the norm before the MLP in the same launch), or with a term over the
    /// stacked rows (the adapter's gate and up).
    #[allow(clippy::too_many_arguments)]
    pub fn gated_forward(&self, ctx: &GpuContext, act: Activation, out: &GpuBuffer, inp: &GpuBuffer, m: usize, norm: Option<InputNorm>, term: Option<LowRankTerm>) -> Result<()> {
        match self {
            Linear::F32 { w, rows, cols } => matmul_gemv_gated(ctx, act, out, inp, w, MatmulDims::new(m, rows / 2, *cols), norm, term),
            Linear::Quant(q) => matmul_quant_gemv_gated(ctx, act, out, inp, q, m, norm, term),
        }
    }

    /// out(M, rows) = rmsnorm(inp)·Wᵀ (+ the term: the adapter's h·Bᵀ) for 1 to 16 rows: the
    /// norm and this projection in one launch on GPUs (decoding); out in `blocks` where given
    /// (the parts of weights stacked by rows apart).
    #[allow(clippy::too_many_arguments)]
    pub fn normed_forward(&self, ctx: &GpuContext, out: &GpuBuffer, blocks: Option<ColumnBlocks>, inp: &GpuBuffer, m: usize, norm: InputNorm, term: Option<LowRankTerm>) -> Result<()> {
        match self {
            Linear::F32 { w, rows, cols } => matmul_gemv_normed(ctx, out, inp, w, MatmulDims { c_blocks: blocks, ..MatmulDims::new(m, *rows, *cols) }, norm, term),
            Linear::Quant(q) => matmul_quant_gemv_normed(ctx, out, blocks, inp, q, m, norm, term),
        }
    }

    /// The tiled and matrix-vector kernels add the term in the product's launch, the others
    /// after it.
    #[allow(clippy::too_many_arguments)]
    fn product(&self, ctx: &GpuContext, kind: MatmulKind, out: &GpuBuffer, a: &GpuBuffer, m: usize, acc: Accumulate, term: Option<LowRankTerm>) -> Result<()> {
        match (self, term) {
            (Linear::F32 { w, rows, cols }, _) => f32_product(ctx, kind, out, a, w, MatmulDims::new(m, *rows, *cols), acc, term),
            (Linear::Quant(q), None) => matmul_quant(ctx, kind, out, a, q, m, acc),
            (Linear::Quant(q), Some(t)) => matmul_quant_low_rank(ctx, kind, out, a, q, m, acc, t),
        }
    }
}

/// A `kind` product with an f32 weight `w` of `d`, and a low-rank term if any.
#[allow(clippy::too_many_arguments)]
fn f32_product(ctx: &GpuContext, kind: MatmulKind, out: &GpuBuffer, a: &GpuBuffer, w: &GpuBuffer, d: MatmulDims, acc: Accumulate, term: Option<LowRankTerm>) -> Result<()> {
    match term {
        Some(t) => matmul_low_rank(ctx, kind, out, a, w, d, acc, t),
        None => matmul(ctx, kind, out, a, w, d, acc),
    }
}

/// Buffers for what each part of weights stacked by rows (q, k, v; gate, up) has of its own:
/// its output, its output's gradient, or LoRA's dh. In one buffer where it fits one binding,
/// so that one launch through the stacked weight reads or writes them in blocks where they lie
/// (the forward's outputs, the input gradient's output gradients and LoRA terms); else apart.
pub(crate) struct StackedParts {
    pub views: Vec<GpuBuffer>,
    /// The buffer the views lie in; None where they are apart.
    whole: Option<Arc<GpuBuffer>>,
}

impl StackedParts {
    /// Whether the parts lie in one buffer (so that one launch writes them all).
    pub fn together(&self) -> bool {
        self.whole.is_some()
    }

    pub fn alloc(ctx: &GpuContext, sizes: &[usize]) -> Result<Self> {
        let sizes: Vec<usize> = sizes.iter().map(|&n| n.max(1)).collect();
        let align = ctx.storage_offset_alignment();
        let bytes: u64 = sizes.iter().map(|&n| (4 * n as u64).next_multiple_of(align)).sum();
        if bytes <= ctx.max_bound_bytes() {
            let arena = ctx.alloc_arena(&sizes)?;
            return Ok(StackedParts { views: arena.views, whole: Some(arena.whole) });
        }
        Ok(StackedParts { views: sizes.iter().map(|&n| ctx.alloc_f32(n)).collect::<Result<_>>()?, whole: None })
    }

    /// Parts `first` to `last` as one view, where they lie in one buffer.
    pub fn span(&self, first: usize, last: usize) -> Option<GpuBuffer> {
        self.whole.as_ref().map(|whole| GpuBuffer::spanning(whole, &self.views[first], &self.views[last]))
    }

    /// The first `widths.len()` parts (two or three) as blocks of rows of those widths, and
    /// the buffer to bind; None where they lie apart.
    pub fn blocks(&self, widths: &[usize]) -> Option<(GpuBuffer, ColumnBlocks)> {
        let whole = self.whole.as_ref()?;
        let blocks: Vec<(usize, usize)> = self.views.iter().zip(widths).map(|(v, &w)| (((v.offset() - whole.offset()) / 4) as usize, w)).collect();
        Some((GpuBuffer::view(whole, 0, whole.len_bytes()), ColumnBlocks::new(&blocks).ok()?))
    }
}
