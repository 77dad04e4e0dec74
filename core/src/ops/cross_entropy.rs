//! Cross-entropy over the vocabulary, on a chunk of rows at a time.
//!
//! A caller that trains walks the B·T rows in chunks: lm_head forward for the chunk,
//! `cross_entropy_forward` and `cross_entropy_backward` on its logits, then the lm_head
//! backward for the chunk, so that only chunk·V logits are ever resident.

use super::{check_len, grid_rows};
use crate::gpu::{Kernel, Shader};
use crate::{GpuBuffer, GpuContext, Result};

/// The target id that masks a row (prompt tokens, padding).
pub const IGNORE: u32 = u32::MAX;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    r: u32,
    v: u32,
}

/// The number of rows that count (targets not IGNORE): the mean's denominator.
pub fn counted(targets: &[u32]) -> usize {
    targets.iter().filter(|&&t| t != IGNORE).count()
}

/// losses (R): per-row negative log-likelihood (0 for ignored rows).
pub fn cross_entropy_forward(ctx: &GpuContext, losses: &GpuBuffer, logits: &GpuBuffer, targets: &GpuBuffer, rows: usize, vocab: usize) -> Result<()> {
    let op = "cross_entropy_forward";
    check_len(op, "logits", logits, rows * vocab)?;
    check_len(op, "targets", targets, rows)?;
    check_len(op, "losses", losses, rows)?;
    let params = Params { r: rows as u32, v: vocab as u32 };
    ctx.dispatch(&Kernel::new(ctx.reduction_shader(Shader::CrossEntropy), op, 0), &[logits, targets], &[losses], &params, grid_rows(rows))
}

/// losses (R) as the forward, and dlogits (R, V) = weights[r]·(softmax − onehot) in the same
/// pass; weights[r] = ∂loss/∂(row r's NLL): 1 / (counted tokens in the batch) for the mean
/// NLL.
#[allow(clippy::too_many_arguments)]
pub fn cross_entropy_backward(ctx: &GpuContext, losses: &GpuBuffer, dlogits: &GpuBuffer, logits: &GpuBuffer, targets: &GpuBuffer, weights: &GpuBuffer, rows: usize, vocab: usize) -> Result<()> {
    let op = "cross_entropy_backward";
    check_len(op, "logits", logits, rows * vocab)?;
    check_len(op, "targets", targets, rows)?;
    check_len(op, "weights", weights, rows)?;
    check_len(op, "losses", losses, rows)?;
    check_len(op, "dlogits", dlogits, rows * vocab)?;
    let params = Params { r: rows as u32, v: vocab as u32 };
    ctx.dispatch(&Kernel::new(ctx.reduction_shader(Shader::CrossEntropy), op, 3), &[logits, targets, weights], &[losses, dlogits], &params, grid_rows(rows))
}
