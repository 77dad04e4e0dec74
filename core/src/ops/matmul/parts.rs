//! Split reductions' parts: their sum into the output (`matmul_sum_splits`), and the products
//! whose parts (or outputs) the caller lays out, to be summed later with other gradients' or
//! read as one operand: a layer's weight gradients, LoRA's x·Aᵀ of the targets that share an
//! input.

use super::{batch_span, drop_params, launch, reduction_split, split_choice_for, tiled_for, Accumulate, BatchStrides, ColumnBlocks, DropOn, MatmulDims, MatmulKind, MatmulTiling, OperandDropout, StridedParams, SPLIT_WORKGROUPS, THIN_COLUMNS};
use crate::error::ensure;
use crate::gpu::{grid_1d, Kernel, KernelPaths, Shader};
use crate::{GpuBuffer, GpuContext, Result};
use std::sync::Arc;

/// The split reduction's last step: out = beta·out + alpha·Σ of the `splits` (rows × cols)
/// partial products in `parts`.
pub(crate) fn sum_splits(ctx: &GpuContext, out: &GpuBuffer, parts: &GpuBuffer, rows: usize, cols: usize, splits: usize, acc: Accumulate) -> Result<()> {
    sum_splits_dropping(ctx, out, parts, rows, cols, SplitSum::one(splits, None), acc, None)
}

/// [`sum_splits`] into an output in column blocks (a stacked forward's parts' outputs).
#[allow(clippy::too_many_arguments)]
pub(crate) fn sum_splits_into_blocks(ctx: &GpuContext, out: &GpuBuffer, blocks: Option<ColumnBlocks>, parts: &GpuBuffer, rows: usize, cols: usize, splits: usize, acc: Accumulate) -> Result<()> {
    sum_splits_dropping(ctx, out, parts, rows, cols, SplitSum::one(splits, blocks), acc, None)
}

/// What a split reduction's parts hold and where their sum goes: `splits` parts, each of
/// `items` outputs of rows × cols back to back (a batch's), summed into the output's items
/// `item_stride` floats apart, or into its column blocks (one item).
#[derive(Clone, Copy)]
pub(super) struct SplitSum {
    pub(super) splits: usize,
    pub(super) items: usize,
    pub(super) item_stride: usize,
    pub(super) blocks: Option<ColumnBlocks>,
}

impl SplitSum {
    fn one(splits: usize, blocks: Option<ColumnBlocks>) -> Self {
        SplitSum { splits, items: 1, item_stride: 0, blocks }
    }
}

/// [`sum_splits`] of `sum`'s parts, with the output's dropout where `drop` masks it
/// (DropOn::Out).
#[allow(clippy::too_many_arguments)]
pub(super) fn sum_splits_dropping(ctx: &GpuContext, out: &GpuBuffer, parts: &GpuBuffer, rows: usize, cols: usize, sum: SplitSum, acc: Accumulate, drop: Option<OperandDropout>) -> Result<()> {
    let (drop_on, drop_seed, drop_p) = drop_params(drop.filter(|x| x.on == DropOn::Out));
    let item = rows * cols;
    let params = StridedParams {
        m: rows as u32,
        n: cols as u32,
        r: 0,
        alpha: acc.alpha,
        beta: acc.beta,
        a_si: 0,
        a_sr: 0,
        b_sj: 0,
        b_sr: 0,
        a_batch: 0,
        b_batch: 0,
        c_batch: if sum.items > 1 { sum.item_stride } else { item } as u32,
        c_split: (sum.items * item) as u32,
        splits: sum.splits as u32,
        r_split: 0,
        drop_on,
        drop_seed,
        drop_p,
        c_blocks: ColumnBlocks::params(sum.blocks),
        ..bytemuck::Zeroable::zeroed()
    };
    ctx.dispatch(&Kernel::new(Shader::MatmulTiled, "matmul_sum_splits", 5), &[parts], &[out], &params, grid_1d((sum.items * item) as u64, 256))
}

/// Where the parts of a split weight gradient go when they are summed later, together with
/// other gradients' ([`matmul_weight_parts`]): part s of the product at `at` bytes plus
/// s·`stride` floats into `parts`. One [`sum_splits`] over a region of gradients laid out as
/// the parts are then replaces a sum per gradient.
#[derive(Clone, Copy)]
pub struct SplitParts<'a> {
    pub parts: &'a Arc<GpuBuffer>,
    /// A multiple of the adapter's storage offset alignment (the parts are bound from there).
    pub at: u64,
    pub stride: usize,
    pub splits: usize,
}

/// Parts a weight gradient's reduction over `m` rows is split into on this context's
/// kernels, for [`SplitParts`]: from the split the tiled kernels give an output of one tile
/// (so every gradient of a layer can share it), in parts of the thin tiles' fewest steps
/// (LoRA's dB is a thin output, dA the rank's rows: where the tuning found shorter parts
/// faster for x·Aᵀ, they are taken here too); None where they would not split it or the
/// context does not run them (the register kernels do not split).
pub fn weight_grad_splits(ctx: &GpuContext, m: usize) -> Option<usize> {
    let splits = weight_grad_parts(m, split_choice_for(ctx.tile_choice(), (64, THIN_COLUMNS)).1);
    (ctx.kernel_paths() == KernelPaths::Gpu && splits > 1).then_some(splits)
}

/// The parts of [`weight_grad_splits`] on any context that runs the tiled kernels (1: none).
/// Parts of at least `min_steps` each ([`SPLIT_MIN_STEPS`](super::SPLIT_MIN_STEPS) unless the context's TileChoice
/// says otherwise).
pub fn weight_grad_parts(m: usize, min_steps: usize) -> usize {
    reduction_split("a weight gradient", 1, (SPLIT_WORKGROUPS, min_steps), m, 1, true, 0).map_or(1, |(splits, _)| splits)
}

/// The split parts of the weight gradient `alpha·aᵀ·b` (a BackwardWeight product, with LoRA
/// dropout on b's side where `drop` has p > 0) into `dest`, on the tiled kernel; a later
/// [`sum_splits`] adds them into the gradient. A batch (b batched) gives one gradient per item,
/// each part holding them all (`d.batch_strides`' c apart).
#[allow(clippy::too_many_arguments)]
pub fn matmul_weight_parts(ctx: &GpuContext, dest: SplitParts, a: &GpuBuffer, b: &GpuBuffer, d: MatmulDims, alpha: f32, drop: Option<OperandDropout>) -> Result<()> {
    let op = MatmulKind::BackwardWeight.entry();
    let drop = drop.filter(|x| x.p > 0.0);
    ensure(drop.is_none_or(|x| x.on == DropOn::B && x.p < 1.0), || format!("{op}: split parts take dropout below 1 on the input's side only"))?;
    let (_, _, len) = MatmulKind::BackwardWeight.operand_lens(&d);
    // a batch's gradients (one per item) lie in each part
    let len = batch_span(d.batch_strides.map_or(len, |s| s.c), len, d.batch);
    let end = dest.at + 4 * batch_span(dest.stride, len, dest.splits) as u64;
    ensure(dest.splits > 1 && dest.stride >= len && end <= dest.parts.len_bytes(), || {
        format!("{op}: {} parts of {len} floats every {} from byte {} do not fit a buffer of {} bytes ({d:?})", dest.splits, dest.stride, dest.at, dest.parts.len_bytes())
    })?;
    let acc = Accumulate { alpha, beta: 0.0 };
    // (64 × 64 tiles whatever the output, unless the run asks for 128: training lays the
    // parts out for the split SPLIT_WORKGROUPS gives them)
    let tiling = if ctx.tile_choice().side == Some(128) { MatmulTiling::TiledWide } else { MatmulTiling::Tiled };
    launch(ctx, MatmulKind::BackwardWeight, tiling, dest.parts, a, b, d, acc, drop, None, Some(dest))
}

/// out[z](M, N) = dropout(x)·w_zᵀ for the `d.batch` weights w_z (N, K) back to back in `w`,
/// out[z] at `dest.at` bytes plus z·`dest.stride` floats of `dest.parts` (`dest.splits` 1): one
/// input by several weights in one launch of the tiled kernel, one dropout mask on x for all
/// of them (LoRA's x·Aᵀ of the targets that read the same input).
pub fn matmul_shared_input(ctx: &GpuContext, dest: SplitParts, x: &GpuBuffer, w: &GpuBuffer, d: MatmulDims, drop: OperandDropout) -> Result<()> {
    let op = "matmul_shared_input";
    let end = dest.at + 4 * batch_span(dest.stride, d.m * d.n, d.batch) as u64;
    ensure(d.a_shared && d.b_batched && dest.splits == 1 && dest.stride >= d.m * d.n && end <= dest.parts.len_bytes(), || {
        format!("{op}: {} outputs of {}×{} every {} floats from byte {} do not fit a buffer of {} bytes ({d:?})", d.batch, d.m, d.n, dest.stride, dest.at, dest.parts.len_bytes())
    })?;
    ensure(drop.on == DropOn::A && (0.0..1.0).contains(&drop.p), || format!("{op}: dropout below 1 on the input only, got {drop:?}"))?;
    let d = MatmulDims { batch_strides: Some(BatchStrides { a: 0, b: d.n * d.k, c: dest.stride }), ..d };
    let tiling = tiled_for(ctx, MatmulKind::Forward, &d, false);
    // (the outputs as one operand: a few tiles' reductions split, each part holding them all)
    let out = GpuBuffer::view(dest.parts, dest.at, 4 * batch_span(dest.stride, d.m * d.n, d.batch) as u64);
    launch(ctx, MatmulKind::Forward, tiling, &out, x, w, d, Accumulate::OVERWRITE, (drop.p > 0.0).then_some(drop), None, None)
}
