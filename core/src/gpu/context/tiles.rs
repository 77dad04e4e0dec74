//! The tiled kernels' shape where a run or the tuning overrides the launchers' heuristics.

use super::GpuContext;

/// The tiled kernels' shape where a run overrides what the launchers would pick
/// (`HEARTH_TILES`, `HEARTH_SPLIT_WORKGROUPS`, `HEARTH_TILE_PREFETCH`), so that one run on a
/// GPU can compare the heuristics with their alternatives (bench/gpu.sh), or where the tile
/// size was tuned for the adapter (the CLI's tile tuning). The results are the same either way but for rounding: a
/// split reduction sums in another order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TileChoice {
    /// Output tiles of this side, 64 or 128, whatever the output's size. None: as
    /// `wide_outputs` says.
    pub side: Option<usize>,
    /// The outputs (values) from which 128 × 128 tiles are taken, smaller ones 64 × 64: as
    /// measured on this adapter (usize::MAX: never). None: ops::matmul's WIDE_OUTPUTS, a
    /// million.
    pub wide_outputs: Option<usize>,
    /// The outputs from which the cooperative-matrix kernels take 128 × 128 tiles, as measured
    /// on this adapter (usize::MAX: never). None: as `wide_outputs`.
    pub coop_wide_outputs: Option<usize>,
    /// The workgroups a launch of few tiles splits its reduction towards, not past them
    /// (ops::matmul's reduction_split; at least 2). None: 64. Training's split weight gradients keep theirs
    /// (their parts' buffers are laid out for them).
    pub split_workgroups: Option<usize>,
    /// The fewest steps of a reduction each part of a split one takes (ops::matmul's
    /// reduction_split, training's split weight gradients too; a multiple of 8 from 8 to
    /// 4096). None: 256.
    pub split_min_steps: Option<usize>,
    /// The split of the launches in thin tiles (64 × 32: LoRA's x·Aᵀ and dh, the rank wide),
    /// as (workgroups, fewest steps of a part) like the two above, where tuned apart: their
    /// workgroups are small (64 invocations), many share a multiprocessor, and a part's
    /// iterations, each a round trip to memory, are their time. None: as the others split.
    pub thin_split: Option<(usize, usize)>,
    /// Whether an f32 product over a reduction of ops::matmul's LONG_REDUCTION steps or more
    /// (the lm_head's input gradient, over the vocabulary) takes 128 × 128 tiles whatever its
    /// outputs, as measured on this adapter: its split fills the GPU in either size, so the
    /// tiles' own speed decides. False (untuned): as its outputs say.
    pub long_wide: bool,
    /// Whether the tiled kernels (f32 and quantized) load each step's values into registers
    /// while the previous step's are summed, or just before they are staged ("loaded in
    /// turn"), as measured on this adapter or forced. None: a step ahead.
    pub prefetch: Option<bool>,
    /// Reduction steps the f32 tiled kernel stages per iteration in 128 × 128 tiles: 16 (half
    /// the barriers per product, twice the workgroup memory: 16.5 KB, past WebGPU's 16 KB)
    /// where this is Some(16) and the device allows it, else 8 (as tuned on the GPU, or
    /// `HEARTH_TILE_STEPS`).
    pub steps: Option<usize>,
    /// The columns of the f32 tiled kernel's tiles of 128 rows (and the f16 tiles'): 64 where
    /// this is Some(64), each invocation summing an 8 × 4 block (half the accumulators, so
    /// more workgroups may share a multiprocessor), else 128, blocks of 8 × 8 (as tuned on the
    /// GPU, or `HEARTH_TILE_COLUMNS`).
    pub columns: Option<usize>,
    /// The tiles in workgroup memory of the f32 tiled kernel's tiles of 128 (and the f16
    /// tiles'): 2 where this is Some(2) and the device has the room (twice the workgroup
    /// memory: past WebGPU's 16 KB), one written while the other is summed, one barrier per
    /// iteration instead of two; else 1 (`HEARTH_TILE_BUFFERS`).
    pub buffers: Option<usize>,
}

impl GpuContext {
    /// This context with the tiled kernels' shape overridden where `tiles` says (a side of 64
    /// or 128, a split target of at least 2; others are ignored).
    pub fn with_tile_choice(mut self, tiles: TileChoice) -> Self {
        self.set_tile_choice(tiles);
        self
    }

    /// [`GpuContext::with_tile_choice`] in place (the CLI's tile tuning times both sides).
    pub fn set_tile_choice(&mut self, tiles: TileChoice) {
        self.tiles = TileChoice {
            side: tiles.side.filter(|s| [64, 128].contains(s)),
            wide_outputs: tiles.wide_outputs,
            coop_wide_outputs: tiles.coop_wide_outputs,
            split_workgroups: tiles.split_workgroups.filter(|&w| w >= 2),
            split_min_steps: tiles.split_min_steps.filter(|&s| crate::ops::matmul::valid_split_min_steps(s)),
            thin_split: tiles.thin_split.filter(|&(w, s)| w >= 2 && crate::ops::matmul::valid_split_min_steps(s)),
            long_wide: tiles.long_wide,
            prefetch: tiles.prefetch,
            steps: tiles.steps.filter(|&s| s == 8 || (s == 16 && self.limits.max_compute_workgroup_storage_size >= crate::ops::matmul::WIDE_16_STEPS_BYTES)),
            columns: tiles.columns.filter(|c| [64, 128].contains(c)),
            buffers: tiles.buffers.filter(|&b| b == 1 || (b == 2 && self.limits.max_compute_workgroup_storage_size >= crate::ops::matmul::wide_tile_bytes(tiles.steps.unwrap_or(8), 2))),
        };
    }

    /// The tiled kernels' shape where this context overrides the heuristics or was tuned.
    pub fn tile_choice(&self) -> TileChoice {
        self.tiles
    }

    /// Whether the tiled matmuls load each step's values a step ahead (`TileChoice::prefetch`).
    pub fn tile_prefetch(&self) -> bool {
        self.tiles.prefetch.unwrap_or(true)
    }

    /// Reduction steps the f32 tiled kernel stages per iteration in 128 × 128 tiles
    /// (`TileChoice::steps`): 8 or 16.
    pub fn tile_steps(&self) -> usize {
        self.tiles.steps.unwrap_or(8)
    }

    /// The columns of the f32 and f16 tiled kernels' tiles of 128 rows
    /// (`TileChoice::columns`): 128 or 64.
    pub fn tile_columns(&self) -> usize {
        self.tiles.columns.unwrap_or(128)
    }

    /// The tiles in workgroup memory of the f32 and f16 tiled kernels' tiles of 128
    /// (`TileChoice::buffers`): 1 or 2.
    pub fn tile_buffers(&self) -> usize {
        self.tiles.buffers.unwrap_or(1)
    }
}
