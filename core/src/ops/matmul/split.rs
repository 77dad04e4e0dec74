//! How a tiled launch splits its reduction into parts (each summed into the output by
//! `matmul_sum_splits` after it): how many parts, of how many steps, from the launch's tiles,
//! its reduction and the workgroups the context's tuning says the GPU runs at once.

use super::{f32_tile, THIN_COLUMNS};
use crate::error::ensure;
use crate::gpu::TileChoice;
use crate::{GpuContext, Result};

/// The split reduction of the tiled kernels (matmul_tiled.wgsl, quant_tiled.wgsl): an output
/// of fewer tiles than half of `SPLIT_WORKGROUPS` (or of the context's TileChoice) over a
/// reduction of at least `SPLIT_MIN_REDUCTION` steps is computed in parts of at least
/// `SPLIT_MIN_STEPS` steps each (or the TileChoice's: on the H200 a part's loop of 256 steps,
/// one workgroup per tile and part, looked like most of the 0.2 ms that LoRA's thin products
/// took each), as many as keep it within `SPLIT_WORKGROUPS` workgroups in all (tuned, they are
/// about what the GPU runs at once: the H100's 256 against its 264 workgroups of 128 × 128
/// tiles, two to each of 132 multiprocessors, where 80 tiles in 4 parts, 320 workgroups, would
/// leave a second round to 56 of them; in 3 parts, 240, one round; where tuned, launches of
/// more tiles split where that takes fewer rounds: `fewer_rounds`); and no workgroup
/// reduces over more than `SPLIT_MAX_STEPS` steps (on lavapipe a workgroup that loops over
/// more than ~2,500 stages of 8 steps, two barriers each, returned wrong sums, while
/// SwiftShader's were right; the lm_head's input gradient reduces over the whole vocabulary).
const SPLIT_MIN_REDUCTION: usize = 512;
pub const SPLIT_MIN_STEPS: usize = 256;
pub const SPLIT_WORKGROUPS: usize = 64;
const SPLIT_MAX_STEPS: usize = 4096;
/// The longest reduction of a batched launch on the cooperative-matrix kernel (whose z is the
/// batch or the split, not both: it cannot split a batch's reductions).
pub(crate) const BATCHED_MAX_REDUCTION: usize = SPLIT_MAX_STEPS;

/// Most parts a launch of many tiles splits into to take fewer rounds ([`fewer_rounds`]).
const ROUND_PARTS: usize = 4;
/// What such a split must save of the launch's rounds: each part writes the whole output and
/// the sum reads it back, in a second launch.
const ROUND_GAIN: f64 = 0.1;
/// Most bytes of the parts of such a split: WebGPU's default storage binding size, which
/// every adapter binds (the outputs of many tiles are large: SmolLM2's gate and up at 2,048
/// tokens, 25 MB).
const ROUND_PARTS_BYTES: usize = 128 << 20;

/// Parts the reduction of a tiled launch of `batch` items of `tiles` output tiles each (their
/// outputs `part_floats` in all) is split into (1: none), and the steps of each (a multiple of
/// the 8 staged per iteration): each part of at least `min_steps` ([`split_choice`]), and
/// - few tiles (under half of `workgroups`, about what the GPU runs at once where tuned): as
///   many parts as keep the launch within `workgroups`;
/// - more, where `workgroups` were tuned (more than the default [`SPLIT_WORKGROUPS`]): the
///   parts that take the fewest rounds of `workgroups` at once ([`fewer_rounds`]).
///
/// The tiled kernels split a batch's reductions alike, each part holding every item's
/// (LoRA's x·Aᵀ of the targets that share an input, and their dh's: 32 tiles of 64 rows and
/// 2 or 3 items, which unsplit took 64–96 workgroups of an H100's 132 multiprocessors through
/// 72–192 iterations each); where `batch_splits` is false (the cooperative-matrix kernel), a
/// batch's reductions must fit one part.
pub(crate) fn reduction_split(op: &str, tiles: usize, (workgroups, min_steps): (usize, usize), reduction: usize, batch: usize, batch_splits: bool, part_floats: usize) -> Result<(usize, usize)> {
    if batch > 1 && !batch_splits {
        ensure(reduction <= SPLIT_MAX_STEPS, || format!("{op}: a batched product over {reduction} steps on cooperative matrices; at most {SPLIT_MAX_STEPS} are supported"))?;
        return Ok((1, reduction.next_multiple_of(8)));
    }
    let tiles = tiles * batch;
    let parts = reduction / min_steps;
    let few = 2 * tiles < workgroups;
    let split = match reduction >= SPLIT_MIN_REDUCTION {
        false => 1,
        true if few => (workgroups / tiles).min(parts),
        // (the untuned default's 64 is no count of what a GPU runs at once)
        true if workgroups <= SPLIT_WORKGROUPS => 1,
        true => fewer_rounds(tiles, workgroups, parts.min(ROUND_PARTS).min(ROUND_PARTS_BYTES / (4 * part_floats.max(1)))),
    }
    .max(1);
    // The longest part a workgroup may take can ask for more parts than fill `workgroups`
    // (the lm_head's input gradient, over the vocabulary). A few tiles then take whole rounds
    // of parts: Qwen2.5's (7 tiles of 128 over 151,936 steps) in 38 parts would be 266
    // workgroups, where an H100 runs 264 at once: two rounds of 4,000 steps; in 72, two of
    // 2,110.
    let least = reduction.div_ceil(SPLIT_MAX_STEPS);
    let splits = match least > split {
        true if few => (least.div_ceil(split) * split).min(parts.max(least)),
        true => least,
        false => split,
    };
    // (parts rounded up to whole stages cover the reduction in fewer of them: 576 steps in 32
    // parts are 24 of 24 steps, not 32 of which 8 sum nothing)
    let steps = reduction.div_ceil(splits).next_multiple_of(8);
    Ok((reduction.div_ceil(steps).max(1), steps))
}

/// The parts (1 to `most`) in which a launch of `tiles` workgroups, `workgroups` of them at
/// once, takes the fewest rounds for the length of its reduction: the fewest such parts, where
/// they save [`ROUND_GAIN`] of it. On an H100 (264 workgroups of 128 × 128 tiles at once),
/// SmolLM2's gate and up at 2,048 tokens are 384 tiles: two rounds, the second 45 % full,
/// which its step's timings showed (17.1 TFLOP/s, where 768 tiles of the same reduction ran
/// at 24.4: 384 / 528 of it); in 2 parts, three rounds of half the steps (1.5).
fn fewer_rounds(tiles: usize, workgroups: usize, most: usize) -> usize {
    let rounds = |parts: usize| (tiles * parts).div_ceil(workgroups.max(1)) as f64 / parts as f64;
    let best = (1..=most.max(1)).min_by(|&a, &b| rounds(a).total_cmp(&rounds(b))).unwrap_or(1);
    if rounds(best) <= (1.0 - ROUND_GAIN) * rounds(1) { best } else { 1 }
}

/// Parts an f32 tiled forward's reduction (`batch` items of m × n outputs in [`f32_tile`]s of
/// `side` rows, over k steps) is split into as [`reduction_split`] splits towards `split.0`
/// workgroups in parts of `split.1` steps or more (the CLI's tile tuning times only the choices
/// that split differently).
pub fn forward_splits(m: usize, n: usize, k: usize, batch: usize, side: usize, split: (usize, usize)) -> usize {
    let (rows, columns) = f32_tile(side, n);
    reduction_split("a forward", m.div_ceil(rows) * n.div_ceil(columns), split, k, batch, true, batch * m * n).map_or(1, |(splits, _)| splits)
}

/// Whether `steps` can be the fewest steps of a split reduction's parts
/// (`TileChoice::split_min_steps`): a multiple of the 8 staged per iteration, at most
/// `SPLIT_MAX_STEPS`.
pub fn valid_split_min_steps(steps: usize) -> bool {
    (8..=SPLIT_MAX_STEPS).contains(&steps) && steps.is_multiple_of(8)
}

/// The workgroups a tiled launch of few tiles splits its reduction towards on `ctx`, and the
/// fewest steps of each part.
pub(crate) fn split_choice(ctx: &GpuContext) -> (usize, usize) {
    common_split(ctx.tile_choice())
}

fn common_split(tiles: TileChoice) -> (usize, usize) {
    (tiles.split_workgroups.unwrap_or(SPLIT_WORKGROUPS), tiles.split_min_steps.unwrap_or(SPLIT_MIN_STEPS))
}

/// [`split_choice`] for a launch in tiles of `tile` (rows, columns): the thin tiles' own where
/// the context has one (`TileChoice::thin_split`).
pub fn split_choice_for(tiles: TileChoice, tile: (usize, usize)) -> (usize, usize) {
    match tiles.thin_split {
        Some(split) if tile == (64, THIN_COLUMNS) => split,
        _ => common_split(tiles),
    }
}
