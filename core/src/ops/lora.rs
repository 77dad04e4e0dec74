//! LoRA on top of a frozen linear layer: y += scale·(x·Aᵀ)·Bᵀ, with A (r, in) and B (out, r).
//! Built from the matmul kernels with their alpha/beta accumulation.

use super::matmul::{matmul, Accumulate, MatmulDims, MatmulKind};
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
}

/// y(M, out) += scale·(x·Aᵀ)·Bᵀ; `h` (M, r) receives x·Aᵀ, kept for the backward.
pub fn lora_forward(ctx: &GpuContext, y: &GpuBuffer, h: &GpuBuffer, x: &GpuBuffer, a: &GpuBuffer, b: &GpuBuffer, d: LoraDims) -> Result<()> {
    matmul(ctx, MatmulKind::Forward, h, x, a, MatmulDims::new(d.m, d.rank, d.d_in), Accumulate::OVERWRITE)?;
    lora_forward_b(ctx, y, h, b, d)
}

/// y(M, out) += scale·h·Bᵀ for h = x·Aᵀ already computed: one part of a fused layer (its rows
/// of B, `d.d_out` of them) after the first.
pub fn lora_forward_b(ctx: &GpuContext, y: &GpuBuffer, h: &GpuBuffer, b: &GpuBuffer, d: LoraDims) -> Result<()> {
    matmul(ctx, MatmulKind::Forward, y, h, b, MatmulDims::new(d.m, d.d_out, d.rank), Accumulate { alpha: d.scale, beta: 1.0 })
}

/// From dy (M, out): dA (r, in), dB (out, r), and dx (M, in) = dx_beta·dx + the LoRA path's
/// part. `dh` (M, r) is scratch. With dropout, `x` is the dropped input the forward used and
/// `dx` a scratch (dx_beta 0) that the caller passes through the same dropout.
#[allow(clippy::too_many_arguments)]
pub fn lora_backward(ctx: &GpuContext, da: &GpuBuffer, db: &GpuBuffer, dx: &GpuBuffer, dx_beta: f32, dh: &GpuBuffer, dy: &GpuBuffer, x: &GpuBuffer, h: &GpuBuffer, a: &GpuBuffer, b: &GpuBuffer, d: LoraDims) -> Result<()> {
    lora_backward_b(ctx, db, dh, 0.0, dy, h, b, d)?;
    lora_backward_a(ctx, da, dx, dx_beta, dh, x, a, d)
}

/// The B half of the backward: dB = scale·dyᵀ·h (added to with `d.accumulate`) and
/// dh = dh_beta·dh + scale·dy·B. A fused layer runs it per part (its rows of B and dB), adding
/// the parts' dh (dh_beta 1 after the first), then [`lora_backward_a`] once.
#[allow(clippy::too_many_arguments)]
pub fn lora_backward_b(ctx: &GpuContext, db: &GpuBuffer, dh: &GpuBuffer, dh_beta: f32, dy: &GpuBuffer, h: &GpuBuffer, b: &GpuBuffer, d: LoraDims) -> Result<()> {
    let beta = if d.accumulate { 1.0 } else { 0.0 };
    matmul(ctx, MatmulKind::BackwardWeight, db, dy, h, MatmulDims::new(d.m, d.d_out, d.rank), Accumulate { alpha: d.scale, beta })?;
    matmul(ctx, MatmulKind::BackwardInput, dh, dy, b, MatmulDims::new(d.m, d.d_out, d.rank), Accumulate { alpha: d.scale, beta: dh_beta })
}

/// The A half: dA = dhᵀ·x (added to with `d.accumulate`) and dx = dx_beta·dx + dh·A.
#[allow(clippy::too_many_arguments)]
pub fn lora_backward_a(ctx: &GpuContext, da: &GpuBuffer, dx: &GpuBuffer, dx_beta: f32, dh: &GpuBuffer, x: &GpuBuffer, a: &GpuBuffer, d: LoraDims) -> Result<()> {
    let beta = if d.accumulate { 1.0 } else { 0.0 };
    matmul(ctx, MatmulKind::BackwardWeight, da, dh, x, MatmulDims::new(d.m, d.rank, d.d_in), Accumulate { alpha: 1.0, beta })?;
    matmul(ctx, MatmulKind::BackwardInput, dx, dh, a, MatmulDims::new(d.m, d.rank, d.d_in), Accumulate { alpha: 1.0, beta: dx_beta })
}
