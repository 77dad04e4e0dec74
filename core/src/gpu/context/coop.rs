//! The cooperative matrices a device offers, and the f16 matmuls that run on them.

use super::GpuContext;
use crate::{Error, Result};

/// The cooperative matrices the kernels on them (pieces/coop_gemm.wgsl) run on: products of
/// `side` × `side` × `side` (f16 into f32), by subgroups of `subgroups.0` to `subgroups.1`
/// invocations (one size on NVIDIA and lavapipe; wgpu reports a range on AMD and Metal), their
/// workgroups sized for subgroups of `sized_for` (the one size, else 32 where the range holds
/// it): a subgroup per block of the tile where they are that size. The kernels are correct on
/// subgroups of any size (wider ones take blocks in turn, the ones past the blocks compute a
/// block again).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoopShape {
    pub side: u32,
    pub subgroups: (u32, u32),
    pub sized_for: u32,
}

impl CoopShape {
    /// Blocks of the kernels' tile of outputs, a subgroup's each: (32 / side)², whatever the
    /// tile (a block of a 128 × 128 tile has 4 × 4 accumulators, of a 64 × 64 one 2 × 2).
    pub fn blocks(&self) -> u32 {
        let per_side = 32 / self.side;
        per_side * per_side
    }

    /// Invocations per workgroup.
    pub fn invocations(&self) -> u32 {
        self.blocks() * self.sized_for
    }

    /// Whether its workgroup has a variant of the kernels and the device allows it.
    pub(super) fn fits(&self, limits: &wgpu::Limits) -> bool {
        // (both tiles' workgroups have as many invocations)
        self.invocations() <= limits.max_compute_invocations_per_workgroup && crate::ops::matmul::coop_variant(*self, 64, false).is_some()
    }
}

/// The cooperative-matrix kernels' workgroup memory in 128 × 128 tiles: two 128 × 40 tiles of
/// f16, 1,024 f32 outputs on their way out, and 128 rows' scales (pieces/row_scales.wgsl).
pub(super) const COOP_WORKGROUP_BYTES: u32 = 2 * 128 * 40 * 2 + 1024 * 4 + 128 * 2 * 4;

impl GpuContext {
    /// Whether the adapter offers cooperative matrices at all, and in a form matmul_coop.wgsl
    /// runs on (16 × 16 × 16 or 8 × 8 × 8 products of f16 into f32).
    pub fn offers_cooperative_matrix(&self) -> (bool, bool) {
        (self.offers_cooperative_matrix, self.coop_shape.is_some())
    }

    /// The cooperative matrices matmul_coop.wgsl runs on here, where it runs.
    pub fn coop_shape(&self) -> Option<CoopShape> {
        self.coop_shape
    }

    /// The cooperative matrices `op` runs on, or an error naming it where this device has
    /// none (not requested, or not offered).
    pub(crate) fn coop_shape_for(&self, op: &str) -> Result<CoopShape> {
        self.coop_shape.filter(|_| self.has_cooperative_matrix()).ok_or_else(|| {
            Error::Shape(format!("{op}: this device has no cooperative matrices (ContextOptions::cooperative_matrix, on an adapter that offers them)"))
        })
    }

    /// This context with the cooperative-matrix kernels' workgroups sized for subgroups of
    /// `subgroup` invocations (tests: a subgroup taking several blocks in turn, subgroups past
    /// the blocks computing one again; the kernels are correct on any). Unchanged where no
    /// variant has that many invocations, or the device allows fewer.
    pub fn with_coop_sized_for(mut self, subgroup: u32) -> Self {
        if let Some(shape) = self.coop_shape.map(|s| CoopShape { sized_for: subgroup, ..s }).filter(|s| s.fits(&self.limits)) {
            self.coop_shape = Some(shape);
        }
        self
    }

    /// True when this device can run matmul_coop.wgsl (it was requested and granted).
    pub fn has_cooperative_matrix(&self) -> bool {
        self.features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)
    }

    /// This context with forwards and input gradients in f16, summed in f32: on cooperative
    /// matrices where the device has them (see [`ContextOptions`](super::ContextOptions)), else in the tiled kernels
    /// with f16 tiles where it has shader-f16; quantized weights' likewise, decoded into f16 as
    /// they are staged. Each row of an output gradient is scaled by a power of
    /// two first (shaders/pieces/row_scales.wgsl). Weight gradients stay f32.
    /// Faster, but the inputs are rounded to f16, so it is a choice, not the default
    /// (`HEARTH_F16_MATMUL=1`). Only where the tiled kernels run: software adapters keep their
    /// f32 register kernels.
    pub fn with_f16_matmuls(mut self, on: bool) -> Self {
        self.set_f16_matmuls(on);
        self
    }

    /// [`GpuContext::with_f16_matmuls`] in place (the web app's switch).
    pub fn set_f16_matmuls(&mut self, on: bool) {
        self.f16_matmuls = on && (self.has_cooperative_matrix() || self.has_f16());
    }

    pub fn f16_matmuls(&self) -> bool {
        self.f16_matmuls
    }

    /// This context with the cooperative-matrix kernel of f32 operands (matmul_coop.wgsl)
    /// loading each stage's values from memory during the previous stage's products, in tiles of
    /// 64 (`HEARTH_COOP_PREFETCH=1`; ops::matmul's coop_variant): to compare with the default,
    /// each stage loaded just before it is staged, on a GPU. The same values summed in the same
    /// order either way. Tiles of 128 and the quantized weights' kernels stage in turn.
    pub fn with_coop_prefetch(mut self, ahead: bool) -> Self {
        self.coop_prefetch = ahead;
        self
    }

    pub fn coop_prefetch(&self) -> bool {
        self.coop_prefetch
    }
}
