//! Bench-only probes of the forward kernels (`bench ops --probes`): parts of a kernel's work
//! left out, so that a GPU's times tell where the forward's time goes. Never a product's
//! kernel.

use super::{MatmulDims, StridedParams};
use crate::error::ensure;
use crate::gpu::{Kernel, Shader, Variant};
use crate::ops::check_len;
use crate::{Error, GpuBuffer, GpuContext, Result};

/// What `bench ops --probes` times beside the f32 forward in tiles of 128 × 128 (values
/// loaded in turn, 8 steps an iteration): matmul_tiled.wgsl's PROBE. Never a product's kernel:
/// each sums the first 8 steps' product once per iteration, with the forward's arithmetic, so
/// that its time against the forward's tells where the forward's goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TileProbe {
    /// Loads from memory in the first iteration only, and writes the values it holds to the
    /// tiles (with both barriers) in every later one: the forward less its loads.
    LoadsOnce,
    /// Writes the tiles in the first iteration only, every later one summing them again: the
    /// inner loop alone (workgroup-memory reads and multiply-adds).
    SumsOnly,
    /// SumsOnly with the invocations on their blocks in row-major order, each 32 on 16 × 2
    /// blocks (matmul_tiled.wgsl's ROW_LANES), not on 8 × 4 with their lanes paired on the
    /// words they read (pieces/block_place.wgsl): what the pairs save of the inner
    /// loop's reads of workgroup memory.
    SumsOnlyRowMajor,
}

impl TileProbe {
    pub const ALL: [TileProbe; 3] = [TileProbe::LoadsOnce, TileProbe::SumsOnly, TileProbe::SumsOnlyRowMajor];

    pub fn name(self) -> &'static str {
        match self {
            TileProbe::LoadsOnce => "loads once",
            TileProbe::SumsOnly => "sums only",
            TileProbe::SumsOnlyRowMajor => "sums only, row-major lanes",
        }
    }

    fn variant(self) -> Variant {
        match self {
            TileProbe::LoadsOnce => Variant { name: "128x128, loaded in turn, probe: loads once", constants: &[("TX", 16.0), ("TY", 16.0), ("PREFETCH", 0.0), ("PROBE", 1.0)] },
            TileProbe::SumsOnly => Variant { name: "128x128, loaded in turn, probe: sums only", constants: &[("TX", 16.0), ("TY", 16.0), ("PREFETCH", 0.0), ("PROBE", 2.0)] },
            TileProbe::SumsOnlyRowMajor => {
                Variant { name: "128x128, loaded in turn, probe: sums only, row-major lanes", constants: &[("TX", 16.0), ("TY", 16.0), ("PREFETCH", 0.0), ("PROBE", 2.0), ("ROW_LANES", 1.0)] }
            }
        }
    }
}

/// `probe` over the forward's operands: y(M×N) = ⌈K/8⌉ · Σ_{r<8} x(i, r)·w(j, r) (x M × K, w
/// N × K, K ≥ 8), in one launch of tiles of 128 × 128, its reduction never split (time it
/// where the output's tiles fill the GPU). Its FLOPs are counted as the forward's.
pub fn matmul_tiled_probe(ctx: &GpuContext, probe: TileProbe, out: &GpuBuffer, x: &GpuBuffer, w: &GpuBuffer, d: MatmulDims) -> Result<()> {
    let op = "matmul_tiled_probe";
    ensure(d.batch == 1 && d.m > 0 && d.n > 0 && d.k >= 8, || format!("{op}: one product of K ≥ 8 steps, got {d:?}"))?;
    check_len(op, "x", x, d.m * d.k)?;
    check_len(op, "w", w, d.n * d.k)?;
    check_len(op, "out", out, d.m * d.n)?;
    let (m, n, k) = (d.m as u32, d.n as u32, d.k as u32);
    let params = StridedParams { m, n, r: k, alpha: 1.0, a_si: k, a_sr: 1, b_sj: k, b_sr: 1, c_batch: m * n, c_split: m * n, splits: 1, r_split: k, ..bytemuck::Zeroable::zeroed() };
    let kernel = Kernel::new(Shader::MatmulTiled, "matmul_tiled", 0).with_variant(probe.variant());
    ctx.dispatch_counted(&kernel, &[x, w], &[out], &params, [n.div_ceil(128), m.div_ceil(128), 1], 2.0 * (d.m * d.n * d.k) as f64)
}

/// What `bench ops --probes` times beside the cooperative-matrix forward in tiles of 128 ×
/// 128 (matmul_coop.wgsl, on a context with cooperative matrices): pieces/coop_gemm.wgsl's
/// SUMS_ONLY, the tiles staged in the first iteration only, every later one summing them
/// again without barriers: the inner loop alone. y(M×N) = ⌈K/32⌉ · Σ_{r<32} x(i, r)·w(j, r)
/// (rounded to f16; x M × K, w N × K, K ≥ 32), its reduction never split (time it where the
/// output's tiles fill the GPU). Never a product's kernel; its FLOPs are counted as the
/// forward's.
pub fn matmul_coop_probe(ctx: &GpuContext, out: &GpuBuffer, x: &GpuBuffer, w: &GpuBuffer, d: MatmulDims) -> Result<()> {
    let op = "matmul_coop_probe";
    let shape = ctx.coop_shape_for(op)?;
    ensure(d.batch == 1 && d.m > 0 && d.n > 0 && d.k >= 32, || format!("{op}: one product of K ≥ 32 steps, got {d:?}"))?;
    check_len(op, "x", x, d.m * d.k)?;
    check_len(op, "w", w, d.n * d.k)?;
    check_len(op, "out", out, d.m * d.n)?;
    macro_rules! variants {
        ($($wg:literal),*) => {
            [$(Variant { name: concat!("128x128, ", $wg, " invocations, probe: sums only"), constants: &[("WG", $wg as f64), ("TILE", 128.0), ("SUMS_ONLY", 1.0)] },)*]
        };
    }
    const VARIANTS: [Variant; 6] = variants!(32, 64, 128, 256, 512, 1024);
    let variant = VARIANTS.into_iter().find(|v| v.constants[0].1 == shape.invocations() as f64);
    let variant = variant.ok_or_else(|| Error::Shape(format!("{op}: no workgroup of {} invocations", shape.invocations())))?;
    let (m, n, k) = (d.m as u32, d.n as u32, d.k as u32);
    let params = StridedParams { m, n, r: k, alpha: 1.0, a_si: k, a_sr: 1, b_sj: k, b_sr: 1, c_batch: m * n, c_split: m * n, splits: 1, r_split: k, ..bytemuck::Zeroable::zeroed() };
    let shader = if shape.side == 16 { Shader::MatmulCoop } else { Shader::MatmulCoop8x8 };
    let kernel = Kernel::new(shader, "matmul_coop", 0).with_variant(variant);
    ctx.dispatch_counted(&kernel, &[x, w], &[out], &params, [n.div_ceil(128), m.div_ceil(128), 1], 2.0 * (d.m * d.n * d.k) as f64)
}
