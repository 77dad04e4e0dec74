//! The GPU's f32 rate with no memory traffic (shaders/fma_peak.wgsl): `hearth bench ops`
//! times it beside the matmuls, so that their GFLOP/s can be read as a share of what this GPU
//! runs through this driver, not only of a data sheet's figure.
//! fma_peak_coop is the same on cooperative matrices (shaders/fma_peak_coop.wgsl).

use super::{check_len, grid_1d};
use crate::error::ensure;
use crate::gpu::{Kernel, Shader, Variant};
use crate::{Error, GpuBuffer, GpuContext, Result};

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

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct CoopParams {
    iters: u32,
}

/// Values one workgroup of [`fma_peak_coop`] writes: its blocks' 8 products of side × side
/// each ((32 / side)² blocks, as the cooperative-matrix matmuls' workgroups have).
pub fn fma_peak_coop_outputs(side: usize) -> usize {
    (32 / side).pow(2) * 8 * side * side
}

/// FLOPs of one launch of [`fma_peak_coop`] over `groups` workgroups and `iters` rounds: each
/// block's 8 products of side³ multiply-adds a round (a GPU whose subgroups are narrower than
/// the workgroup expects computes some blocks twice over, uncounted).
pub fn fma_peak_coop_flop(side: usize, groups: usize, iters: usize) -> f64 {
    let blocks = (32 / side).pow(2);
    (groups * blocks) as f64 * iters as f64 * 8.0 * 2.0 * (side * side * side) as f64
}

/// shaders/fma_peak_coop.wgsl on `ctx`'s cooperative matrices: `groups` workgroups (sized as
/// the matmuls' are, `GpuContext::coop_shape`), each block `iters` rounds of its 8 products;
/// out holds `groups · fma_peak_coop_outputs(side)` values: ops::cpu's fma_peak_coop.
pub fn fma_peak_coop(ctx: &GpuContext, out: &GpuBuffer, groups: usize, iters: usize) -> Result<()> {
    let op = "fma_peak_coop";
    let shape = ctx.coop_shape_for(op)?;
    let side = shape.side as usize;
    ensure((1..=65_535).contains(&groups), || format!("{op}: 1 to 65,535 workgroups, got {groups}"))?;
    // (exact in f32 below 16,384 rounds: shaders/fma_peak_coop.wgsl)
    ensure(iters < 16_384, || format!("{op}: fewer than 16,384 rounds, got {iters}"))?;
    check_len(op, "out", out, groups * fma_peak_coop_outputs(side))?;
    let variant = coop_workgroup(shape.invocations()).ok_or_else(|| Error::Shape(format!("{op}: no workgroup of {} invocations", shape.invocations())))?;
    let shader = if side == 16 { Shader::FmaPeakCoop } else { Shader::FmaPeakCoop8x8 };
    ctx.dispatch(&Kernel::new(shader, op, 0).with_variant(variant), &[], &[out], &CoopParams { iters: iters as u32 }, [groups as u32, 1, 1])
}

/// The workgroup of `invocations` (WG), as the cooperative-matrix matmuls' variants have.
fn coop_workgroup(invocations: u32) -> Option<Variant> {
    const VARIANTS: [Variant; 6] = [
        Variant { name: "32 invocations", constants: &[("WG", 32.0)] },
        Variant { name: "64 invocations", constants: &[("WG", 64.0)] },
        Variant { name: "128 invocations", constants: &[("WG", 128.0)] },
        Variant { name: "256 invocations", constants: &[("WG", 256.0)] },
        Variant { name: "512 invocations", constants: &[("WG", 512.0)] },
        Variant { name: "1024 invocations", constants: &[("WG", 1024.0)] },
    ];
    VARIANTS.into_iter().find(|v| v.constants[0].1 == invocations as f64)
}
