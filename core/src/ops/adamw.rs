//! AdamW, in place, as torch.optim.AdamW computes it.

use super::{check_len, grid_1d};
use crate::gpu::{Kernel, Shader};
use crate::{GpuBuffer, GpuContext, Result};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamwConfig {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

impl Default for AdamwConfig {
    /// PyTorch's defaults except lr, which is PEFT's usual 2e-4.
    fn default() -> Self {
        AdamwConfig { lr: 2e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    bc1: f32,
    bc2: f32,
}

/// One AdamW step (`step` counts from 1) on `param`, `m`, `v` (all n values), with the
/// gradient multiplied by `clip[1]`: `clip` is the (norm, factor) pair that
/// [`super::grad_norm::grad_norm`] writes; a buffer holding (0, 1) disables clipping.
#[allow(clippy::too_many_arguments)]
pub fn adamw_update(ctx: &GpuContext, param: &GpuBuffer, m: &GpuBuffer, v: &GpuBuffer, grad: &GpuBuffer, clip: &GpuBuffer, n: usize, step: u32, cfg: &AdamwConfig) -> Result<()> {
    let op = "adamw_update";
    for (name, b) in [("param", param), ("m", m), ("v", v), ("grad", grad)] {
        check_len(op, name, b, n)?;
    }
    check_len(op, "clip", clip, 2)?;
    let step = step.max(1) as i32;
    let params = Params {
        n: n as u32,
        lr: cfg.lr,
        beta1: cfg.beta1,
        beta2: cfg.beta2,
        eps: cfg.eps,
        weight_decay: cfg.weight_decay,
        bc1: 1.0 - cfg.beta1.powi(step),
        bc2: 1.0 - cfg.beta2.powi(step),
    };
    ctx.dispatch(&Kernel::new(Shader::Adamw, op, 0), &[grad, clip], &[param, m, v], &params, grid_1d(n as u64, 256))
}
