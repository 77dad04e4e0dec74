//! The global gradient norm over many tensors, and the clipping factor, on the GPU.

use super::check_len;
use crate::gpu::{Kernel, Shader};
use crate::{GpuBuffer, GpuContext, Result};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    slot: u32,
    max_norm: f32,
}

/// Workgroups that share each tensor's sum of squares (grad_norm.wgsl's PARTS).
pub const PARTS: usize = 64;

/// Writes out[0] = ‖(all grads)‖₂ and out[1] = min(1, max_norm / (‖g‖ + 1e-6)) (1 when
/// max_norm is 0: no clipping). `sums` is scratch with `PARTS` f32s per tensor.
pub fn grad_norm(ctx: &GpuContext, out: &GpuBuffer, sums: &GpuBuffer, grads: &[(&GpuBuffer, usize)], max_norm: f32) -> Result<()> {
    let op = "grad_norm";
    check_len(op, "sums", sums, PARTS * grads.len())?;
    check_len(op, "out", out, 2)?;
    for (slot, &(g, n)) in grads.iter().enumerate() {
        check_len(op, "grad", g, n)?;
        let params = Params { n: n as u32, slot: slot as u32, max_norm };
        ctx.dispatch(&Kernel::new(ctx.reduction_shader(Shader::GradNorm), "grad_norm_partial", 0), &[g], &[sums], &params, [PARTS as u32, 1, 1])?;
    }
    let params = Params { n: (PARTS * grads.len()) as u32, slot: 0, max_norm };
    ctx.dispatch(&Kernel::new(ctx.reduction_shader(Shader::GradNorm), "grad_norm_finish", 2), &[sums], &[out], &params, [1, 1, 1])
}
