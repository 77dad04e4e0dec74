//! The GPU's f32 rate with no memory traffic (shaders/fma_peak.wgsl): `hearth bench ops`
//! times it beside the matmuls, so that their GFLOP/s can be read as a share of what this GPU
//! runs through this driver, not only of a data sheet's figure.

use super::{check_len, grid_1d};
use crate::error::ensure;
use crate::gpu::{Kernel, Shader};
use crate::{GpuBuffer, GpuContext, Result};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    iters: u32,
    m: f32,
    c: f32,
}

/// FLOPs of one launch of `n` invocations over `iters` rounds: 32 fused multiply-adds a round.
pub fn fma_peak_flop(n: usize, iters: usize) -> f64 {
    64.0 * n as f64 * iters as f64
}

/// out[i] = the sum of invocation i's 32 chains after `iters` rounds of x ← x·m + c (ops::cpu's
/// fma_peak says where they start).
pub fn fma_peak(ctx: &GpuContext, out: &GpuBuffer, n: usize, iters: usize, m: f32, c: f32) -> Result<()> {
    let op = "fma_peak";
    check_len(op, "out", out, n)?;
    ensure(u32::try_from(n.max(iters)).is_ok(), || format!("{op}: {n} invocations of {iters} rounds; at most {} of either", u32::MAX))?;
    let params = Params { n: n as u32, iters: iters as u32, m, c };
    ctx.dispatch(&Kernel::new(Shader::FmaPeak, op, 0), &[], &[out], &params, grid_1d(n as u64, 256))
}
