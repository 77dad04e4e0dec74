//! LoRA on top of a frozen linear layer: y += scale·(dropout(x)·Aᵀ)·Bᵀ, with A (r, in) and
//! B (out, r). Built from the matmul kernels with their alpha/beta accumulation; the tiled
//! ones apply the dropout mask themselves (`matmul_dropout`) and add the products that end
//! in the base layer's output (h·Bᵀ, dh·A) in the base matmul's own launch, as its low-rank
//! term (`lora_up_term`, `lora_input_term`; the model's projections pass them to the base).
//! Its own products stay f32 where the context asks for f16 matmuls (`choose_f32_tiling`).

use super::matmul::{choose_f32_tiling, matmul, matmul_dropout, matmul_dropout_with, matmul_shared_input, matmul_weight_parts, matmul_with, Accumulate, BatchStrides, ColumnBlocks, DropOn, LowRankTerm, MatmulDims, MatmulKind, OperandDropout, SplitParts, TermLayout};
use crate::{GpuBuffer, GpuContext, Result};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoraDims {
    /// Rows of x (B·T).
    pub m: usize,
    pub d_in: usize,
    pub d_out: usize,
    pub rank: usize,
    /// alpha / r (or alpha / √r with rsLoRA).
    pub scale: f32,
    /// The backward adds into dA and dB instead of overwriting them (gradient accumulation).
    pub accumulate: bool,
    /// Dropout on the layer's input x (PEFT's lora_dropout): the probability, and this
    /// layer's seed for the micro-batch (the backward must get the forward's).
    pub dropout: (f32, u32),
}

impl LoraDims {
    fn drop_on(&self, on: DropOn) -> OperandDropout {
        OperandDropout { on, p: self.dropout.0, seed: self.dropout.1 }
    }

    /// The weight gradients' beta: added to with `accumulate`, else overwritten.
    fn grad_beta(&self) -> f32 {
        if self.accumulate { 1.0 } else { 0.0 }
    }
}

/// Where the backward puts a weight gradient (dA or dB).
#[derive(Clone, Copy)]
pub enum GradDest<'a> {
    /// Into the gradient itself (added to with `LoraDims::accumulate`).
    Grad(&'a GpuBuffer),
    /// As its split reduction's parts, which the caller sums into the gradient later,
    /// together with other gradients' (the model: once per layer).
    Parts(SplitParts<'a>),
}

/// y(M, out) += scale·(dropout(x)·Aᵀ)·Bᵀ; `h` (M, r) receives dropout(x)·Aᵀ, kept for the
/// backward. (The model adds the B product in the base matmul instead: [`lora_up_term`].)
pub fn lora_forward(ctx: &GpuContext, y: &GpuBuffer, h: &GpuBuffer, x: &GpuBuffer, a: &GpuBuffer, b: &GpuBuffer, d: LoraDims) -> Result<()> {
    lora_down(ctx, h, x, a, d)?;
    lora_up_term(h, b, d).add_alone(ctx, MatmulKind::Forward, y, d.m, d.d_out, 1.0)
}

/// h(M, r) = dropout(x)·Aᵀ: the forward's first product (once per input: a fused layer's parts
/// share it).
pub fn lora_down(ctx: &GpuContext, h: &GpuBuffer, x: &GpuBuffer, a: &GpuBuffer, d: LoraDims) -> Result<()> {
    let dims = MatmulDims::new(d.m, d.rank, d.d_in);
    let tiling = choose_f32_tiling(ctx, MatmulKind::Forward, &dims);
    matmul_dropout_with(ctx, MatmulKind::Forward, tiling, h, x, a, dims, Accumulate::OVERWRITE, d.drop_on(DropOn::A))
}

/// h_z(M, r) = dropout(x)·A_zᵀ for `count` targets that read the input x, their A's back to
/// back in `a` (count·r, in), h_z at `h.at` bytes plus z·`h.stride` floats: one launch (the
/// tiled kernels), one dropout mask on x for them all.
pub fn lora_down_shared(ctx: &GpuContext, h: SplitParts, x: &GpuBuffer, a: &GpuBuffer, count: usize, d: LoraDims) -> Result<()> {
    let dims = MatmulDims { batch: count, b_batched: true, a_shared: true, ..MatmulDims::new(d.m, d.rank, d.d_in) };
    matmul_shared_input(ctx, h, x, a, dims, d.drop_on(DropOn::A))
}

/// scale·h·Bᵀ, the forward's second product, as the base forward's low-rank term (B: the
/// layer's, or a fused layer's part's rows, `d.d_out` of them).
pub fn lora_up_term<'a>(h: &'a GpuBuffer, b: &'a GpuBuffer, d: LoraDims) -> LowRankTerm<'a> {
    LowRankTerm { h, v: b, rank: d.rank, scale: d.scale, dropout: (0.0, 0), layout: TermLayout::Rows }
}

/// From dy (M, out): dA (r, in), dB (out, r), and dx (M, in) = dx_beta·dx + the LoRA path's
/// part (through the forward's dropout mask). `dh` (M, r) is scratch; `x` the layer's input
/// as the forward got it (before dropout). (The model adds dh·A in the base layer's input
/// gradient where it can: [`lora_input_term`].)
#[allow(clippy::too_many_arguments)]
pub fn lora_backward(ctx: &GpuContext, da: &GpuBuffer, db: &GpuBuffer, dx: &GpuBuffer, dx_beta: f32, dh: &GpuBuffer, dy: &GpuBuffer, x: &GpuBuffer, h: &GpuBuffer, a: &GpuBuffer, b: &GpuBuffer, d: LoraDims) -> Result<()> {
    lora_backward_b(ctx, GradDest::Grad(db), dh, 0.0, dy, h, b, d)?;
    lora_grad_a(ctx, GradDest::Grad(da), dh, x, d)?;
    let dims = MatmulDims::new(d.m, d.rank, d.d_in);
    let tiling = choose_f32_tiling(ctx, MatmulKind::BackwardInput, &dims);
    matmul_dropout_with(ctx, MatmulKind::BackwardInput, tiling, dx, dh, a, dims, Accumulate { alpha: 1.0, beta: dx_beta }, d.drop_on(DropOn::Out))
}

/// The B half of the backward: dB = scale·dyᵀ·h (added to with `d.accumulate`) and
/// dh = dh_beta·dh + scale·dy·B. A fused layer runs it per part (its rows of B and dB), adding
/// the parts' dh (dh_beta 1 after the first), then [`lora_grad_a`] and dx once.
#[allow(clippy::too_many_arguments)]
pub fn lora_backward_b(ctx: &GpuContext, db: GradDest, dh: &GpuBuffer, dh_beta: f32, dy: &GpuBuffer, h: &GpuBuffer, b: &GpuBuffer, d: LoraDims) -> Result<()> {
    let dims = MatmulDims::new(d.m, d.d_out, d.rank);
    match db {
        GradDest::Grad(db) => matmul(ctx, MatmulKind::BackwardWeight, db, dy, h, dims, Accumulate { alpha: d.scale, beta: d.grad_beta() })?,
        GradDest::Parts(parts) => matmul_weight_parts(ctx, parts, dy, h, dims, d.scale, None)?,
    }
    input_gradient(ctx, dh, dy, b, dims, Accumulate { alpha: d.scale, beta: dh_beta })
}

/// dh = beta·dh + alpha·dy·B in f32 tiles.
fn input_gradient(ctx: &GpuContext, dh: &GpuBuffer, dy: &GpuBuffer, b: &GpuBuffer, dims: MatmulDims, acc: Accumulate) -> Result<()> {
    matmul_with(ctx, MatmulKind::BackwardInput, choose_f32_tiling(ctx, MatmulKind::BackwardInput, &dims), dh, dy, b, dims, acc)
}

/// [`lora_backward_b`] of `count` targets of one shape at once (targets of one width that
/// read one input: gate and up; k and v), in two launches of the tiled kernels: their dy's,
/// x·Aᵀ's and dh's each `strides` apart ([dy, h, dh], floats), their B's back to back in `b`
/// and their dB's in `db` (any lengths: the tiled kernels split a batch's reductions).
#[allow(clippy::too_many_arguments)]
pub fn lora_backward_b_batched(ctx: &GpuContext, db: GradDest, dh: &GpuBuffer, dy: &GpuBuffer, h: &GpuBuffer, b: &GpuBuffer, count: usize, strides: [usize; 3], d: LoraDims) -> Result<()> {
    let [dy_stride, h_stride, dh_stride] = strides;
    let b_len = d.d_out * d.rank;
    let batch = |a, b, c| MatmulDims { batch: count, b_batched: true, batch_strides: Some(BatchStrides { a, b, c }), ..MatmulDims::new(d.m, d.d_out, d.rank) };
    let dims = batch(dy_stride, h_stride, b_len);
    match db {
        GradDest::Grad(db) => matmul(ctx, MatmulKind::BackwardWeight, db, dy, h, dims, Accumulate { alpha: d.scale, beta: d.grad_beta() })?,
        GradDest::Parts(parts) => matmul_weight_parts(ctx, parts, dy, h, dims, d.scale, None)?,
    }
    input_gradient(ctx, dh, dy, b, batch(dy_stride, b_len, dh_stride), Accumulate { alpha: d.scale, beta: 0.0 })
}

/// dA = dhᵀ·dropout(x) (added to with `d.accumulate`), with the forward's mask.
pub fn lora_grad_a(ctx: &GpuContext, da: GradDest, dh: &GpuBuffer, x: &GpuBuffer, d: LoraDims) -> Result<()> {
    grad_a(ctx, da, dh, x, MatmulDims::new(d.m, d.rank, d.d_in), d)
}

/// The dA's of the targets that read one input x, their A's (and so their dA's: `da`) back to
/// back, as one product dhᵀ·dropout(x) under the mask they share: each target's dh is a block
/// of `dh` (`blocks`, in target order; the tiled kernels).
pub fn lora_grad_a_shared(ctx: &GpuContext, da: GradDest, dh: &GpuBuffer, blocks: ColumnBlocks, x: &GpuBuffer, d: LoraDims) -> Result<()> {
    grad_a(ctx, da, dh, x, MatmulDims { a_blocks: Some(blocks), ..MatmulDims::new(d.m, blocks.width(), d.d_in) }, d)
}

fn grad_a(ctx: &GpuContext, da: GradDest, dh: &GpuBuffer, x: &GpuBuffer, dims: MatmulDims, d: LoraDims) -> Result<()> {
    match da {
        GradDest::Grad(da) => matmul_dropout(ctx, MatmulKind::BackwardWeight, da, dh, x, dims, Accumulate { alpha: 1.0, beta: d.grad_beta() }, d.drop_on(DropOn::B)),
        GradDest::Parts(parts) => matmul_weight_parts(ctx, parts, dh, x, dims, 1.0, Some(d.drop_on(DropOn::B))),
    }
}

/// dropout(dh·A), the LoRA path's part of dx through the forward's mask, as the base layer's
/// input-gradient low-rank term.
pub fn lora_input_term<'a>(dh: &'a GpuBuffer, a: &'a GpuBuffer, d: LoraDims) -> LowRankTerm<'a> {
    LowRankTerm { h: dh, v: a, rank: d.rank, scale: 1.0, dropout: d.dropout, layout: TermLayout::Rows }
}
