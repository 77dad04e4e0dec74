//! The tiled matmuls' tile size and split reductions, measured on the user's GPU. Whether an
//! output is computed in 128 × 128 tiles (more work per workgroup, fewer workgroups) or 64 × 64
//! pays depends on how many compute units the GPU has to fill, which no API reports: a
//! laptop's integrated GPU fills with few workgroups, an H100 wants hundreds. So does whether a
//! launch of few tiles should split its reduction into parts summed by a second launch (more
//! workgroups, more memory traffic), and whether loading each step's values a step ahead
//! (during the previous step's sums: latency hidden, more registers held) beats loading them
//! just before they are staged. So the first command on a GPU times both sizes at training's
//! shapes (f32 and Q4_1 forwards), with few tiles splitting as each of `SPLIT_CANDIDATES`
//! (towards so many workgroups, in parts of so many steps or more; launches of more tiles split
//! where that takes fewer rounds of those workgroups) and towards the workgroups the GPU runs
//! at once (`workgroups_at_once`, measured first), each with the values
//! loaded ahead and in turn, takes the choice (the output size from which 128 × 128 tiles are
//! taken, the split, the loads' order) that costs least in total, and keeps it in the cache;
//! later commands read it.
//! Where the context has cooperative matrices (HEARTH_F16_MATMUL=1), their kernels' forward is
//! timed in both tiles too, for a threshold of their own (kept in a cache file of its own).
//! Last, at the shapes that the choice puts in tiles of 128, the f32 forward staging 16
//! reduction steps per iteration (half the barriers, twice the workgroup memory) against 8,
//! where the GPU's workgroup memory holds them; then, at the steps kept, tiles of 128 rows by 64
//! columns (8 × 4 outputs an invocation: fewer registers, so possibly more workgroups on a
//! multiprocessor) against 128 columns; then, at the columns kept, the tiles kept twice in
//! workgroup memory (one barrier per iteration) against once, where the GPU holds them. Then
//! the lm_head's input gradient (a small output over the whole vocabulary) in tiles of 64
//! against 128, for whether long reductions take tiles of 128 whatever their outputs
//! (`TileChoice::long_wide`). And LoRA's thin products (tiles of 64 × 32, the rank wide) split
//! as the others against splits towards more workgroups in shorter parts (`THIN_CANDIDATES`),
//! for a split of their own (`TileChoice::thin_split`).
//! Results differ at most by rounding (a split reduction sums in another order).

use anyhow::{Context, Result};
use hearth_core::gpu::{Shader, TileChoice};
use hearth_core::ops::matmul::{f32_tile, forward_splits, matmul_with, LONG_REDUCTION, valid_split_min_steps, wide_tile_bytes, Accumulate, BatchStrides, MatmulDims, MatmulKind, MatmulTiling, SPLIT_MIN_STEPS, SPLIT_WORKGROUPS, THIN_COLUMNS, WIDE_16_STEPS_BYTES, WIDE_OUTPUTS};
use hearth_core::ops::matmul_quant::{matmul_quant_with, GpuQuantWeight, QuantBlock};
use hearth_core::quant::{QuantFormat, QuantTensor};
use hearth_core::rng::Rng;
use hearth_core::{GpuBuffer, GpuContext};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// (M, N, K) of the forwards timed: SmolLM2's projections over a short and a full micro-batch
/// (q/o, down, gate/up alone and stacked), and a larger model's.
const SHAPES: [(usize, usize, usize); 6] = [(512, 576, 576), (2048, 576, 576), (2048, 576, 1536), (2048, 1536, 576), (2048, 3072, 576), (4096, 4096, 1024)];
/// And LoRA's thin products at SmolLM2's full micro-batch, r 16, timed apart for a split of
/// their own (`measure_thin`), f32 only (the adapter's weights are never quantized), as
/// (M, N, K, batch): x·Aᵀ of q, k and v together (one input, three A's: one launch), of o,
/// of down. A step has as many of them as of the projections (and as many dh's, of the same
/// shapes), and they are the launches of few tiles that split.
const THIN_SHAPES: [(usize, usize, usize, usize); 3] = [(2048, 16, 576, 3), (2048, 16, 576, 1), (2048, 16, 1536, 1)];
/// `--quick`'s: one that splits.
const QUICK_THIN_SHAPES: [(usize, usize, usize, usize); 1] = [(128, 16, 512, 1)];
/// The lm_head's input gradient, timed in both tile sizes for `TileChoice::long_wide` (M, N,
/// K: an output of M × K over N steps): a chunk of SmolLM2's 256 rows, 576 wide, over its
/// 49,152 words; `--quick`'s over 4,096.
const LONG_SHAPE: (usize, usize, usize) = (256, 49152, 576);
const QUICK_LONG_SHAPE: (usize, usize, usize) = (64, 4096, 64);
/// `--quick`: small shapes for CPU emulators (the tests); the third splits towards 256
/// workgroups in 64 × 64 tiles, not towards 64; the last is thin (tiles of 64 × 32).
const QUICK_SHAPES: [(usize, usize, usize); 4] = [(64, 64, 64), (128, 256, 64), (512, 512, 512), (128, 16, 64)];

/// What the cache file's layout and the shapes are, and what a split's workgroups mean (9:
/// at most so many, no longer the fewest past them; 10: launches of more tiles split where
/// that takes fewer rounds of them; 11: the thin tiles' split and the long reductions' tiles
/// tuned apart; 12: the tiled kernels' invocations paired on the words they read, whose times
/// the choices were made on); a change re-tunes.
const TUNING_VERSION: u32 = 12;

/// The format the cooperative-matrix kernels' timings are listed under (f32 operands rounded
/// to f16 as they are staged).
const COOP_FORMAT: &str = "f16 coop";

/// The splits a launch of few tiles may take: the workgroups it splits its reduction towards
/// and the fewest steps of each part, the fixed default first. (256-step parts cap the split
/// of a reduction over 576 at 2, whatever the workgroups: on the H200 LoRA's thin products,
/// split so, took 0.22 ms each.) Each is timed with the values loaded a step ahead (the
/// default) and in turn; another choice than the defaults is taken only where it saves
/// `MARGIN` of their total (a split costs memory traffic, and either order registers or
/// latency, that timings at a few shapes may not show).
/// After them, a split towards the workgroups of tiles of 128 that the GPU runs at once
/// ([`workgroups_at_once`]) in parts of `AT_ONCE_MIN_STEPS` or more, where measured and not
/// among them.
const SPLIT_CANDIDATES: [(usize, usize); 5] = [(SPLIT_WORKGROUPS, SPLIT_MIN_STEPS), (256, SPLIT_MIN_STEPS), (1024, SPLIT_MIN_STEPS), (256, 64), (1024, 32)];
const AT_ONCE_MIN_STEPS: usize = 64;
const MARGIN: f64 = 0.03;

/// The splits LoRA's thin products may take instead of the others' (tried after it, kept where
/// one saves `MARGIN` of its total at the thin shapes): towards more workgroups, in shorter
/// parts. Their workgroups (64 invocations, tiles of 64 × 32) are small, so a multiprocessor
/// holds several, and the others' split leaves them a few each: on the H100 (256
/// workgroups, parts of 64 steps), x·Aᵀ of o took 47 µs in 256 workgroups of 9 iterations,
/// each iteration a round trip to memory with little else in flight.
const THIN_CANDIDATES: [(usize, usize); 4] = [(1024, 32), (1024, 16), (2048, 16), (4096, 8)];

/// One shape's forward in both tile sizes with few tiles splitting towards `split_workgroups`
/// in parts of `split_min_steps` or more, and the values loaded a step ahead (`prefetch`) or
/// in turn, ms per launch.
pub struct Timed {
    pub format: &'static str,
    pub shape: (usize, usize, usize),
    pub split_workgroups: usize,
    pub split_min_steps: usize,
    pub prefetch: bool,
    pub ms_64: f64,
    pub ms_128: f64,
}

/// A thin shape's f32 forward (`batch` items, one input) in tiles of 64 × 32, split towards
/// `split_workgroups` in parts of `split_min_steps` or more, ms per launch (the sum of the
/// parts included).
pub struct ThinTimed {
    pub shape: (usize, usize, usize),
    pub batch: usize,
    pub split_workgroups: usize,
    pub split_min_steps: usize,
    pub ms: f64,
}

/// The lm_head's input gradient (`shape`: M, N, K, an output of M × K over N steps) in tiles of
/// 64 and of 128 at everything else kept, ms per launch.
pub struct LongTimed {
    pub shape: (usize, usize, usize),
    pub ms_64: f64,
    pub ms_128: f64,
}

/// One shape's f32 forward in tiles of 128 at the chosen split and order of loads, staging 8
/// and 16 reduction steps per iteration, ms per launch.
pub struct StepsTimed {
    pub shape: (usize, usize, usize),
    pub ms_8: f64,
    pub ms_16: f64,
}

/// One shape's f32 forward in tiles of 128 rows at the chosen split, order of loads and steps,
/// 128 and 64 columns wide, ms per launch.
pub struct ColumnsTimed {
    pub shape: (usize, usize, usize),
    pub ms_128: f64,
    pub ms_64: f64,
}

/// One shape's f32 forward in tiles of 128 rows at the chosen split, order of loads, steps
/// and columns, its tiles kept once and twice in workgroup memory, ms per launch.
pub struct BuffersTimed {
    pub shape: (usize, usize, usize),
    pub ms_1: f64,
    pub ms_2: f64,
}

/// The measured choice and what it came from.
pub struct Tuning {
    /// Outputs from which 128 × 128 tiles are taken (usize::MAX: never).
    pub wide_outputs: usize,
    /// The workgroups a launch of few tiles splits its reduction towards.
    pub split_workgroups: usize,
    /// The fewest steps of each part of a split reduction.
    pub split_min_steps: usize,
    /// The split of the launches in thin tiles (64 × 32), (workgroups, fewest steps of a part),
    /// where it is not the others'.
    pub thin_split: Option<(usize, usize)>,
    /// Whether f32 products over long reductions take tiles of 128 whatever their outputs.
    pub long_wide: bool,
    /// The tiled kernels load each step's values a step ahead (else in turn).
    pub prefetch: bool,
    /// Reduction steps the f32 tiles of 128 stage per iteration: 8 or 16.
    pub steps: usize,
    /// The columns of the f32 tiles of 128 rows: 128 or 64.
    pub columns: usize,
    /// The f32 tiles of 128 kept in workgroup memory once or twice: 1 or 2.
    pub buffers: usize,
    /// Outputs from which the cooperative-matrix kernels take 128 × 128 tiles (usize::MAX:
    /// never), where they were timed.
    pub coop_wide_outputs: Option<usize>,
    /// The workgroups of the f32 tiles of 128 that the GPU runs at once, as measured (not
    /// kept: the split candidate it gave is).
    pub workgroups_at_once: Option<usize>,
    pub timed: Vec<Timed>,
    pub thin_timed: Vec<ThinTimed>,
    pub long_timed: Option<LongTimed>,
    pub steps_timed: Vec<StepsTimed>,
    pub columns_timed: Vec<ColumnsTimed>,
    pub buffers_timed: Vec<BuffersTimed>,
}

impl Tuning {
    pub fn to_json(&self) -> Value {
        let timed: Vec<Value> = self
            .timed
            .iter()
            .map(|t| json!({ "format": t.format, "m": t.shape.0, "n": t.shape.1, "k": t.shape.2, "split_workgroups": t.split_workgroups, "split_min_steps": t.split_min_steps, "prefetch": t.prefetch, "ms_64": t.ms_64, "ms_128": t.ms_128 }))
            .collect();
        let mut v = json!({
            "version": TUNING_VERSION,
            "wide_outputs": (self.wide_outputs != usize::MAX).then_some(self.wide_outputs),
            "split_workgroups": self.split_workgroups,
            "split_min_steps": self.split_min_steps,
            "thin_split": self.thin_split.map(|(w, s)| json!({ "workgroups": w, "min_steps": s })),
            "long_wide": self.long_wide,
            "long_timed": self.long_timed.as_ref().map(|t| json!({ "m": t.shape.0, "n": t.shape.1, "k": t.shape.2, "ms_64": t.ms_64, "ms_128": t.ms_128 })),
            "prefetch": self.prefetch,
            "steps": self.steps,
            "timed": timed,
            "thin_timed": self.thin_timed.iter().map(|t| json!({ "m": t.shape.0, "n": t.shape.1, "k": t.shape.2, "batch": t.batch, "split_workgroups": t.split_workgroups, "split_min_steps": t.split_min_steps, "ms": t.ms })).collect::<Vec<_>>(),
            "steps_timed": self.steps_timed.iter().map(|t| json!({ "m": t.shape.0, "n": t.shape.1, "k": t.shape.2, "ms_8": t.ms_8, "ms_16": t.ms_16 })).collect::<Vec<_>>(),
            "columns": self.columns,
            "columns_timed": self.columns_timed.iter().map(|t| json!({ "m": t.shape.0, "n": t.shape.1, "k": t.shape.2, "ms_128": t.ms_128, "ms_64": t.ms_64 })).collect::<Vec<_>>(),
            "buffers": self.buffers,
            "buffers_timed": self.buffers_timed.iter().map(|t| json!({ "m": t.shape.0, "n": t.shape.1, "k": t.shape.2, "ms_1": t.ms_1, "ms_2": t.ms_2 })).collect::<Vec<_>>(),
            "workgroups_at_once": self.workgroups_at_once,
        });
        // (absent where they were not timed; null for never, as wide_outputs)
        if let Some(w) = self.coop_wide_outputs {
            v["coop_wide_outputs"] = json!((w != usize::MAX).then_some(w));
        }
        v
    }

    /// The tile choice it makes (the split and the loads' order as None where they are the
    /// defaults).
    pub fn choice(&self) -> TileChoice {
        TileChoice {
            side: None,
            wide_outputs: Some(self.wide_outputs),
            coop_wide_outputs: self.coop_wide_outputs,
            split_workgroups: (self.split_workgroups != SPLIT_WORKGROUPS).then_some(self.split_workgroups),
            split_min_steps: (self.split_min_steps != SPLIT_MIN_STEPS).then_some(self.split_min_steps),
            thin_split: self.thin_split,
            long_wide: self.long_wide,
            prefetch: (!self.prefetch).then_some(false),
            steps: (self.steps == 16).then_some(16),
            columns: (self.columns == 64).then_some(64),
            buffers: (self.buffers == 2).then_some(2),
        }
    }
}

/// The threshold with the least total time over `timed`, and that total: 128 × 128 tiles from
/// each timed output size in turn, or never. Ties go to the larger threshold (fewer wide
/// launches).
fn best_threshold(timed: &[&Timed]) -> (usize, f64) {
    let outputs = |t: &Timed| t.shape.0 * t.shape.1;
    let total = |from: usize| -> f64 { timed.iter().map(|t| if outputs(t) >= from { t.ms_128 } else { t.ms_64 }).sum() };
    let mut candidates: Vec<usize> = timed.iter().map(|t| outputs(t)).collect();
    candidates.push(usize::MAX);
    candidates.sort_unstable();
    candidates.dedup();
    let best = candidates.into_iter().rev().min_by(|&a, &b| total(a).total_cmp(&total(b))).expect("at least `never`");
    (best, total(best))
}

/// (wide_outputs, (split_workgroups, split_min_steps), prefetch) with the least total time over
/// the tiled kernels' rows of `timed`: each (split, loads' order) pair's best threshold, the
/// first pair timed (the defaults) unless another saves `MARGIN` of its total.
pub fn best_choice(timed: &[Timed]) -> (usize, (usize, usize), bool) {
    let timed: Vec<&Timed> = timed.iter().filter(|t| t.format != COOP_FORMAT).collect();
    let key = |t: &Timed| ((t.split_workgroups, t.split_min_steps), t.prefetch);
    let mut pairs: Vec<((usize, usize), bool)> = Vec::new();
    for t in &timed {
        if !pairs.contains(&key(t)) {
            pairs.push(key(t));
        }
    }
    let best = |p: ((usize, usize), bool)| best_threshold(&timed.iter().copied().filter(|t| key(t) == p).collect::<Vec<_>>());
    let default = pairs.first().copied().unwrap_or((SPLIT_CANDIDATES[0], true));
    let (threshold, total) = best(default);
    let ((split, prefetch), (threshold, _)) = pairs
        .into_iter()
        .skip(1)
        .map(|p| (p, best(p)))
        .filter(|(_, (_, t))| *t < total * (1.0 - MARGIN))
        .min_by(|a, b| a.1 .1.total_cmp(&b.1 .1))
        .unwrap_or((default, (threshold, total)));
    (threshold, split, prefetch)
}

/// Whether the alternative of each (default ms, alternative ms) pair saves `MARGIN` of the
/// defaults' total (false where nothing was timed).
fn alternative_saves(pairs: impl Iterator<Item = (f64, f64)>) -> bool {
    let (default, alternative, n) = pairs.fold((0.0, 0.0, 0), |(a, b, n), (x, y)| (a + x, b + y, n + 1));
    n > 0 && alternative < default * (1.0 - MARGIN)
}

/// Tiles of 128 for long reductions where they save `MARGIN` of the 64's time over `timed`.
pub fn best_long_wide(timed: &LongTimed) -> bool {
    alternative_saves(std::iter::once((timed.ms_64, timed.ms_128)))
}

/// 16 steps per iteration where they save `MARGIN` of the 8 steps' total over `timed`, else 8.
pub fn best_steps(timed: &[StepsTimed]) -> usize {
    if alternative_saves(timed.iter().map(|t| (t.ms_8, t.ms_16))) { 16 } else { 8 }
}

/// 64 columns where they save `MARGIN` of the 128 columns' total over `timed`, else 128.
pub fn best_columns(timed: &[ColumnsTimed]) -> usize {
    if alternative_saves(timed.iter().map(|t| (t.ms_128, t.ms_64))) { 64 } else { 128 }
}

/// Two tiles where they save `MARGIN` of one tile's total over `timed`, else one.
pub fn best_buffers(timed: &[BuffersTimed]) -> usize {
    if alternative_saves(timed.iter().map(|t| (t.ms_1, t.ms_2))) { 2 } else { 1 }
}

/// The cooperative-matrix kernels' threshold, where `timed` has their rows.
fn coop_threshold(timed: &[Timed]) -> Option<usize> {
    let coop: Vec<&Timed> = timed.iter().filter(|t| t.format == COOP_FORMAT).collect();
    (!coop.is_empty()).then(|| best_threshold(&coop).0)
}

/// Times the f32 and Q4_1 tiled forwards at the shapes in both tile sizes, few tiles splitting
/// as each of `SPLIT_CANDIDATES`, the values loaded ahead and in turn, on `ctx` (its own tile
/// choice is restored after), and the cooperative-matrix kernels' forward at the default split
/// where `ctx` has them. Where a split candidate splits a shape as the default does, the
/// default's times (in the same order of loads) stand for it. Then the f32 tiles of 128's
/// variants, the lm_head's input gradient (`time_long`) and LoRA's thin products
/// (`measure_thin`) at what it kept.
pub fn measure(ctx: &mut GpuContext, quick: bool) -> Result<Tuning> {
    let shapes = if quick { &QUICK_SHAPES[..] } else { &SHAPES[..] };
    let before = ctx.tile_choice();
    // (each timing sets what it times; the steps and columns, which a run may force, stay at
    // 8 and 128 but where the variants below time them)
    let base = TileChoice { steps: None, columns: None, buffers: None, ..before };
    compile_variants(ctx, base, shapes[0].0, shapes[0].1, shapes[0].2)?;
    ctx.set_tile_choice(before);
    crate::bench::keep_busy(ctx, crate::bench::WARM_MS)?;
    let at_once = workgroups_at_once(ctx, base, quick)?;
    let mut candidates = SPLIT_CANDIDATES.to_vec();
    if let Some(w) = at_once.filter(|&w| w >= 2 && !candidates.contains(&(w, AT_ONCE_MIN_STEPS))) {
        candidates.push((w, AT_ONCE_MIN_STEPS));
    }
    let mut rng = Rng::new(0);
    let mut timed = Vec::new();
    for &(m, n, k) in shapes {
        let x = ctx.upload_f32(&rng.vec_uniform(m * k, -1.0, 1.0))?;
        let y = ctx.alloc_f32(m * n)?;
        let w_values = rng.vec_uniform(n * k, -1.0, 1.0);
        let w = ctx.upload_f32(&w_values)?;
        let q = GpuQuantWeight::upload(ctx, &QuantTensor::quantize(QuantFormat::Q4_1, &w_values, n, k)?)?;
        let d = MatmulDims::new(m, n, k);
        // [prefetch][side][format]: the default split's, then each candidate's
        let mut default_ms = [[[0.0; 2]; 2]; 2];
        let default_split = candidates[0];
        for ((split, steps), prefetch) in candidates.iter().flat_map(|&split| [(split, true), (split, false)]) {
            let mut ms = [[0.0; 2]; 2];
            for (i, side) in [64, 128].into_iter().enumerate() {
                if (split, steps) != default_split && forward_splits(m, n, k, 1, side, (split, steps)) == forward_splits(m, n, k, 1, side, default_split) {
                    ms[i] = default_ms[prefetch as usize][i];
                    continue;
                }
                ctx.set_tile_choice(TileChoice { side: Some(side), split_workgroups: Some(split), split_min_steps: Some(steps), prefetch: Some(prefetch), ..base });
                let ctx = &*ctx;
                let tiling = if side == 128 { MatmulTiling::TiledWide } else { MatmulTiling::Tiled };
                let (f32_ms, kernels) = time_launch(ctx, &mut || matmul_with(ctx, MatmulKind::Forward, tiling, &y, &x, &w, d, Accumulate::OVERWRITE))?;
                ran_as_timed(&kernels, f32_tile(side, n), prefetch, 8, 1)?;
                ms[i][0] = f32_ms;
                let (q_ms, kernels) = time_launch(ctx, &mut || matmul_quant_with(ctx, QuantBlock::Tiled, MatmulKind::Forward, &y, &x, &q, m, Accumulate::OVERWRITE, None))?;
                ran_as_timed(&kernels, (side, side), prefetch, 8, 1)?;
                ms[i][1] = q_ms;
            }
            if (split, steps) == default_split {
                default_ms[prefetch as usize] = ms;
                // (once, as the cooperative-matrix kernels stage in one order only)
                if ctx.has_cooperative_matrix() && prefetch {
                    let mut coop = [0.0; 2];
                    for (i, side) in [64, 128].into_iter().enumerate() {
                        ctx.set_tile_choice(TileChoice { side: Some(side), split_workgroups: Some(split), split_min_steps: Some(steps), ..base });
                        let ctx = &*ctx;
                        coop[i] = time_launch(ctx, &mut || matmul_with(ctx, MatmulKind::Forward, MatmulTiling::Coop, &y, &x, &w, d, Accumulate::OVERWRITE))?.0;
                    }
                    timed.push(Timed { format: COOP_FORMAT, shape: (m, n, k), split_workgroups: split, split_min_steps: steps, prefetch, ms_64: coop[0], ms_128: coop[1] });
                }
            }
            for (f, format) in ["f32", "q4_1"].into_iter().enumerate() {
                timed.push(Timed { format, shape: (m, n, k), split_workgroups: split, split_min_steps: steps, prefetch, ms_64: ms[0][f], ms_128: ms[1][f] });
            }
        }
    }
    let (wide_outputs, (split_workgroups, split_min_steps), prefetch) = best_choice(&timed);
    // The shapes the choice puts in tiles of 128, each with its time there (the chosen split
    // and order of loads; 8 steps, 128 columns) and its operands, for the variants below.
    let chosen = TileChoice { side: Some(128), split_workgroups: Some(split_workgroups), split_min_steps: Some(split_min_steps), prefetch: Some(prefetch), ..base };
    let mut wide = Vec::new();
    for &(m, n, k) in shapes.iter().filter(|s| s.0 * s.1 >= wide_outputs) {
        let at_choice = |t: &&Timed| t.format == "f32" && t.shape == (m, n, k) && (t.split_workgroups, t.split_min_steps, t.prefetch) == (split_workgroups, split_min_steps, prefetch);
        let ms = timed.iter().find(at_choice).expect("every shape timed at every split").ms_128;
        let operands = (ctx.upload_f32(&rng.vec_uniform(m * k, -1.0, 1.0))?, ctx.upload_f32(&rng.vec_uniform(n * k, -1.0, 1.0))?, ctx.alloc_f32(m * n)?);
        wide.push(((m, n, k), ms, operands));
    }
    // 16 steps per iteration against 8
    let mut steps_timed = Vec::new();
    if ctx.summary().max_workgroup_storage >= WIDE_16_STEPS_BYTES {
        for (shape, ms_8, (x, w, y)) in &wide {
            let ms_16 = time_wide(ctx, TileChoice { steps: Some(16), ..chosen }, *shape, x, w, y)?;
            steps_timed.push(StepsTimed { shape: *shape, ms_8: *ms_8, ms_16 });
        }
    }
    let steps = best_steps(&steps_timed);
    // 64 columns against 128, at the steps kept
    let mut columns_timed = Vec::new();
    for (i, (shape, ms_8, (x, w, y))) in wide.iter().enumerate() {
        let ms_128 = if steps == 16 { steps_timed[i].ms_16 } else { *ms_8 };
        let ms_64 = time_wide(ctx, TileChoice { steps: Some(steps), columns: Some(64), ..chosen }, *shape, x, w, y)?;
        columns_timed.push(ColumnsTimed { shape: *shape, ms_128, ms_64 });
    }
    let columns = best_columns(&columns_timed);
    // two tiles against one, at the steps and columns kept, where the GPU holds them
    let mut buffers_timed = Vec::new();
    if ctx.summary().max_workgroup_storage >= wide_tile_bytes(steps, 2) {
        for (i, (shape, _, (x, w, y))) in wide.iter().enumerate() {
            let ms_1 = if columns == 64 { columns_timed[i].ms_64 } else { columns_timed[i].ms_128 };
            let ms_2 = time_wide(ctx, TileChoice { steps: Some(steps), columns: Some(columns), buffers: Some(2), ..chosen }, *shape, x, w, y)?;
            buffers_timed.push(BuffersTimed { shape: *shape, ms_1, ms_2 });
        }
    }
    let buffers = best_buffers(&buffers_timed);
    let kept = TileChoice { steps: Some(steps), columns: Some(columns), buffers: Some(buffers), ..chosen };
    // the lm_head's input gradient in both tile sizes, at everything kept
    let long_timed = time_long(ctx, kept, if quick { QUICK_LONG_SHAPE } else { LONG_SHAPE })?;
    // the thin products' split, at the order of loads kept
    let thin_shapes = if quick { &QUICK_THIN_SHAPES[..] } else { &THIN_SHAPES[..] };
    let common = (split_workgroups, split_min_steps);
    let thin_timed = measure_thin(ctx, TileChoice { side: Some(64), ..kept }, common, thin_shapes, &mut rng)?;
    ctx.set_tile_choice(before);
    // (the timed buffers go back to the device, not into the command's pool and its peak)
    ctx.trim_pool();
    ctx.reset_peak_memory();
    let thin_split = best_thin_split(&thin_timed, common);
    let long_wide = best_long_wide(&long_timed);
    Ok(Tuning { wide_outputs, split_workgroups, split_min_steps, thin_split, long_wide, prefetch, steps, columns, buffers, coop_wide_outputs: coop_threshold(&timed), workgroups_at_once: at_once, timed, thin_timed, long_timed: Some(long_timed), steps_timed, columns_timed, buffers_timed })
}

/// The input gradient of `shape` (M, N, K: an output of M × K over N steps) on `kept` (its split,
/// order of loads, and the tiles of 128's steps, columns and copies) in tiles of 64 and of 128,
/// each checked to have run in them.
fn time_long(ctx: &mut GpuContext, kept: TileChoice, (m, n, k): (usize, usize, usize)) -> Result<LongTimed> {
    // (the values do not change the time)
    let (dy, w, dx) = (ctx.upload_f32(&vec![0.5; m * n])?, ctx.upload_f32(&vec![0.25; n * k])?, ctx.alloc_f32(m * k)?);
    let mut ms = [0.0; 2];
    for (i, side) in [64, 128].into_iter().enumerate() {
        ctx.set_tile_choice(TileChoice { side: Some(side), ..kept });
        let ctx = &*ctx;
        let tiling = if side == 128 { MatmulTiling::TiledWide } else { MatmulTiling::Tiled };
        let (t, kernels) = time_launch(ctx, &mut || matmul_with(ctx, MatmulKind::BackwardInput, tiling, &dx, &dy, &w, MatmulDims::new(m, n, k), Accumulate::OVERWRITE))?;
        match side {
            128 => ran_as_timed(&kernels, (128, ctx.tile_columns()), ctx.tile_prefetch(), ctx.tile_steps(), ctx.tile_buffers())?,
            _ => ran_as_timed(&kernels, (64, 64), ctx.tile_prefetch(), 8, 1)?,
        }
        ms[i] = t;
    }
    Ok(LongTimed { shape: (m, n, k), ms_64: ms[0], ms_128: ms[1] })
}

/// LoRA's thin products (`shapes`: M, N, K, batch) in tiles of 64 × 32 on `chosen` (its order
/// of loads), split as the others split (`common`, chosen's) and as each of `THIN_CANDIDATES`,
/// each checked to have run in those tiles in as many parts as the split gives.
fn measure_thin(ctx: &mut GpuContext, chosen: TileChoice, common: (usize, usize), shapes: &[(usize, usize, usize, usize)], rng: &mut Rng) -> Result<Vec<ThinTimed>> {
    let candidates: Vec<(usize, usize)> = std::iter::once(common).chain(THIN_CANDIDATES.into_iter().filter(|&c| c != common)).collect();
    let mut timed = Vec::new();
    for &(m, n, k, batch) in shapes {
        let (x, w, y) = (ctx.upload_f32(&rng.vec_uniform(m * k, -1.0, 1.0))?, ctx.upload_f32(&rng.vec_uniform(batch * n * k, -1.0, 1.0))?, ctx.alloc_f32(batch * m * n)?);
        let d = MatmulDims { batch, b_batched: batch > 1, a_shared: batch > 1, ..MatmulDims::new(m, n, k) };
        for &(split_workgroups, split_min_steps) in &candidates {
            ctx.set_tile_choice(TileChoice { thin_split: Some((split_workgroups, split_min_steps)), ..chosen });
            let ctx = &*ctx;
            let (ms, kernels) = time_launch(ctx, &mut || matmul_with(ctx, MatmulKind::Forward, MatmulTiling::Tiled, &y, &x, &w, d, Accumulate::OVERWRITE))?;
            ran_as_timed(&kernels, f32_tile(64, n), ctx.tile_prefetch(), 8, 1)?;
            let parts = forward_splits(m, n, k, batch, 64, (split_workgroups, split_min_steps));
            anyhow::ensure!(kernels.iter().any(|k| k.contains("matmul_sum_splits")) == (parts > 1), "the tile tuning timed {m} × {n} × {k} (batch {batch}) in {parts} parts, but {kernels:?} ran");
            timed.push(ThinTimed { shape: (m, n, k), batch, split_workgroups, split_min_steps, ms });
        }
    }
    Ok(timed)
}

/// The thin launches' split with the least total time over `timed`, where it saves `MARGIN` of
/// the total of `common` (the others' split); None (as the others) where none does.
pub fn best_thin_split(timed: &[ThinTimed], common: (usize, usize)) -> Option<(usize, usize)> {
    let total = |split: (usize, usize)| -> f64 { timed.iter().filter(|t| (t.split_workgroups, t.split_min_steps) == split).map(|t| t.ms).sum() };
    let mut splits: Vec<(usize, usize)> = timed.iter().map(|t| (t.split_workgroups, t.split_min_steps)).collect();
    splits.sort_unstable();
    splits.dedup();
    let base = total(common);
    splits.into_iter().filter(|&s| s != common && total(s) < base * (1.0 - MARGIN)).min_by(|&a, &b| total(a).total_cmp(&total(b)))
}

/// The workgroups of the f32 tiles of 128 that this GPU runs at once (how many of its
/// multiprocessors it has times how many such workgroups each holds, which no API reports):
/// the smallest launch of equal workgroups whose rate (workgroups per millisecond) reaches
/// 97 % of the best seen, counting up by 8 until twice the best so far and 64 more have passed.
/// A launch of that many takes one round; one more workgroup takes a second. None where no
/// launch ran. Each workgroup sums a 128 × 128 tile over 2,048 steps (64 in `quick`), every
/// one reading the same operands and writing the same output (a batch at strides of 0): long
/// enough that a launch's own cost (6 µs on the H100) does not favour the larger launches,
/// whose rate would otherwise creep up past the first round's.
fn workgroups_at_once(ctx: &mut GpuContext, base: TileChoice, quick: bool) -> Result<Option<usize>> {
    const STEP: usize = 8;
    let k = if quick { 64 } else { 2048 };
    let most = if quick { 4 * STEP } else { 4096 };
    let (x, w, y) = (ctx.upload_f32(&vec![1.0; 128 * k])?, ctx.upload_f32(&vec![1.0; 128 * k])?, ctx.alloc_f32(128 * 128)?);
    // (tiles of 128, never split: fewer tiles than half of 2 workgroups never are)
    ctx.set_tile_choice(TileChoice { side: Some(128), split_workgroups: Some(2), ..base });
    let ctx = &*ctx;
    let mut rates: Vec<(usize, f64)> = Vec::new();
    let mut best = (0, 0.0);
    for n in (STEP..=most).step_by(STEP) {
        if best.0 > 0 && n > 2 * best.0 + 64 {
            break;
        }
        let d = MatmulDims { batch: n, b_batched: true, batch_strides: Some(BatchStrides { a: 0, b: 0, c: 0 }), ..MatmulDims::new(128, 128, k) };
        let (ms, kernels) = time_launch(ctx, &mut || matmul_with(ctx, MatmulKind::Forward, MatmulTiling::TiledWide, &y, &x, &w, d, Accumulate::OVERWRITE))?;
        ran_as_timed(&kernels, (128, 128), ctx.tile_prefetch(), 8, 1)?;
        let rate = n as f64 / ms;
        rates.push((n, rate));
        if rate > best.1 {
            best = (n, rate);
        }
    }
    Ok(rates.into_iter().find(|&(_, rate)| rate >= 0.97 * best.1).map(|(n, _)| n))
}

/// Every kernel variant the tuning times, run once at (m, n, k) before any is timed: each
/// pipeline is compiled on its first launch, and a GPU left idle while the host compiles
/// lowers its clocks, so that timings taken between compiles read it slow (see bench ops'
/// compile pass).
fn compile_variants(ctx: &mut GpuContext, base: TileChoice, m: usize, n: usize, k: usize) -> Result<()> {
    let (x, w, y) = (ctx.alloc_f32(m * k)?, ctx.alloc_f32(n * k)?, ctx.alloc_f32(m * n)?);
    let q = GpuQuantWeight::upload(ctx, &QuantTensor::quantize(QuantFormat::Q4_1, &Rng::new(1).vec_uniform(n * k, -1.0, 1.0), n, k)?)?;
    let d = MatmulDims::new(m, n, k);
    for prefetch in [true, false] {
        for side in [64, 128] {
            ctx.set_tile_choice(TileChoice { side: Some(side), prefetch: Some(prefetch), ..base });
            let tiling = if side == 128 { MatmulTiling::TiledWide } else { MatmulTiling::Tiled };
            matmul_with(ctx, MatmulKind::Forward, tiling, &y, &x, &w, d, Accumulate::OVERWRITE)?;
            matmul_quant_with(ctx, QuantBlock::Tiled, MatmulKind::Forward, &y, &x, &q, m, Accumulate::OVERWRITE, None)?;
            // (a thin output's tiles of 64 × 32, and the batch workgroups_at_once launches)
            matmul_with(ctx, MatmulKind::Forward, tiling, &y, &x, &w, MatmulDims::new(m, THIN_COLUMNS.min(n), k), Accumulate::OVERWRITE)?;
            if ctx.has_cooperative_matrix() && prefetch {
                matmul_with(ctx, MatmulKind::Forward, MatmulTiling::Coop, &y, &x, &w, d, Accumulate::OVERWRITE)?;
            }
        }
        // the wide variants, where the device holds them (set_tile_choice leaves out the others)
        for (steps, columns, buffers) in [8, 16].into_iter().flat_map(|s| [128, 64].into_iter().flat_map(move |c| [1, 2].map(|b| (s, c, b)))) {
            ctx.set_tile_choice(TileChoice { side: Some(128), prefetch: Some(prefetch), steps: Some(steps), columns: Some(columns), buffers: Some(buffers), ..base });
            if (ctx.tile_steps(), ctx.tile_buffers()) == (steps, buffers) {
                matmul_with(ctx, MatmulKind::Forward, MatmulTiling::TiledWide, &y, &x, &w, d, Accumulate::OVERWRITE)?;
            }
        }
    }
    pollster::block_on(ctx.finish())?;
    Ok(())
}

/// ms per launch of the f32 forward y = x·wᵀ of `shape` in tiles of 128 rows as `tiles` has
/// them (its steps, columns and tiles kept, the order of loads), checked to have run that
/// variant.
fn time_wide(ctx: &mut GpuContext, tiles: TileChoice, (m, n, k): (usize, usize, usize), x: &GpuBuffer, w: &GpuBuffer, y: &GpuBuffer) -> Result<f64> {
    ctx.set_tile_choice(tiles);
    let ctx = &*ctx;
    let (ms, kernels) = time_launch(ctx, &mut || matmul_with(ctx, MatmulKind::Forward, MatmulTiling::TiledWide, y, x, w, MatmulDims::new(m, n, k), Accumulate::OVERWRITE))?;
    ran_as_timed(&kernels, (128, ctx.tile_columns()), ctx.tile_prefetch(), ctx.tile_steps(), ctx.tile_buffers())?;
    Ok(ms)
}

/// ms per launch of `launch`: bench's fastest of 5 batches, each batch long enough (about
/// 5 ms) that submitting and waiting do not hide the difference. Also the kernels it ran.
fn time_launch(ctx: &GpuContext, launch: &mut dyn FnMut() -> hearth_core::Result<()>) -> Result<(f64, Vec<String>)> {
    let mut failed = None;
    let mut run = || {
        if let Err(e) = launch() {
            failed.get_or_insert(e);
        }
    };
    let (ms, kernels) = crate::bench::time(ctx, 1, 5.0, &mut run)?;
    match failed {
        Some(e) => Err(e.into()),
        None => Ok((ms, kernels)),
    }
}

/// An error unless the tiled kernel among `kernels` (beside a split's sum) is the variant
/// timed: tiles of (rows, columns), its values loaded ahead or in turn as `prefetch` says,
/// staging `steps` reduction steps per iteration in `buffers` tiles.
fn ran_as_timed(kernels: &[String], (rows, columns): (usize, usize), prefetch: bool, steps: usize, buffers: usize) -> Result<()> {
    let order = if prefetch { "" } else { ", loaded in turn" };
    let steps = if steps == 16 { ", 16 steps" } else { "" };
    let buffers = if buffers == 2 { ", two tiles" } else { "" };
    let variant = format!("[{rows}x{columns}{order}{steps}{buffers}]");
    match kernels.iter().any(|k| k.ends_with(&variant)) {
        true => Ok(()),
        false => anyhow::bail!("the tile tuning timed {variant} but {kernels:?} ran"),
    }
}

/// Where the tuning of `ctx`'s adapter is kept: under $XDG_CACHE_HOME (or ~/.cache)
/// /hearth/tuning/, named for the adapter and a hash of what the timings depend on (the
/// adapter, its driver, this build's kernels, whether the context has cooperative matrices),
/// so that a new driver or new kernels re-tune, and a context with cooperative matrices tunes
/// theirs too.
pub fn cache_path(ctx: &GpuContext) -> Result<PathBuf> {
    let s = ctx.summary();
    let mut hash = Sha256::new();
    hash.update(format!("{TUNING_VERSION}\n{}\n{}\n{}\n{}\n", s.name, s.backend, s.driver, ctx.has_cooperative_matrix()));
    for shader in Shader::ALL {
        hash.update(shader.source());
    }
    let digest: String = hash.finalize()[..8].iter().map(|b| format!("{b:02x}")).collect();
    let name: String = s.name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    let cache = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => std::env::home_dir().context("no home folder for the tile tuning's cache (set XDG_CACHE_HOME)")?.join(".cache"),
    };
    Ok(cache.join("hearth/tuning").join(format!("{name}-{digest}.json")))
}

/// The tile choice in a cache file (its side None), or why it cannot be used.
pub fn read_cache(path: &Path) -> Result<TileChoice, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("not JSON ({e})"))?;
    if v["version"].as_u64() != Some(TUNING_VERSION as u64) {
        return Err(format!("version {} where this build writes {TUNING_VERSION}", v["version"]));
    }
    let wide_outputs = threshold(&v, "wide_outputs")?;
    let split = &v["split_workgroups"];
    let split_workgroups = split.as_u64().filter(|&w| w >= 2).ok_or_else(|| format!("split_workgroups {split}: expected a number of workgroups, at least 2"))? as usize;
    let steps = &v["split_min_steps"];
    let split_min_steps = steps.as_u64().map(|s| s as usize).filter(|&s| valid_split_min_steps(s)).ok_or_else(|| format!("split_min_steps {steps}: expected a multiple of 8 from 8 to 4096"))?;
    let prefetch = v["prefetch"].as_bool().ok_or_else(|| format!("prefetch {}: expected true (the values loaded a step ahead) or false (in turn)", v["prefetch"]))?;
    let tile_steps = v["steps"].as_u64().filter(|&s| s == 8 || s == 16).ok_or_else(|| format!("steps {}: expected 8 or 16 (reduction steps per iteration in tiles of 128)", v["steps"]))? as usize;
    let columns = v["columns"].as_u64().filter(|&c| c == 64 || c == 128).ok_or_else(|| format!("columns {}: expected 128 or 64 (the columns of the f32 tiles of 128 rows)", v["columns"]))? as usize;
    let buffers = v["buffers"].as_u64().filter(|&b| b == 1 || b == 2).ok_or_else(|| format!("buffers {}: expected 1 or 2 (the f32 tiles of 128 kept once or twice in workgroup memory)", v["buffers"]))? as usize;
    // (absent where the cooperative-matrix kernels were not timed)
    let coop_wide_outputs = v.get("coop_wide_outputs").map(|_| threshold(&v, "coop_wide_outputs")).transpose()?;
    let thin_split = match &v["thin_split"] {
        Value::Null => None,
        t => match (t["workgroups"].as_u64(), t["min_steps"].as_u64()) {
            (Some(w), Some(s)) if w >= 2 && valid_split_min_steps(s as usize) => Some((w as usize, s as usize)),
            _ => return Err(format!("thin_split {t}: expected null (as the other launches split) or {{\"workgroups\": at least 2, \"min_steps\": a multiple of 8 from 8 to 4096}}")),
        },
    };
    // (absent: false)
    let long_wide = match &v["long_wide"] {
        Value::Null => false,
        Value::Bool(b) => *b,
        other => return Err(format!("long_wide {other}: expected true (long reductions in tiles of 128) or false")),
    };
    Ok(Tuning { wide_outputs, split_workgroups, split_min_steps, thin_split, long_wide, prefetch, steps: tile_steps, columns, buffers, coop_wide_outputs, workgroups_at_once: None, timed: Vec::new(), thin_timed: Vec::new(), long_timed: None, steps_timed: Vec::new(), columns_timed: Vec::new(), buffers_timed: Vec::new() }.choice())
}

/// A threshold of 128 × 128 tiles in a cache file: outputs, or null for never (usize::MAX).
fn threshold(v: &Value, key: &str) -> Result<usize, String> {
    match &v[key] {
        Value::Null => Ok(usize::MAX),
        w => w.as_u64().filter(|&w| w > 0).map(|w| w as usize).ok_or_else(|| format!("{key} {w}: expected a number of outputs, or null for never")),
    }
}

pub fn write_cache(path: &Path, tuning: &Tuning) -> Result<()> {
    std::fs::create_dir_all(path.parent().expect("a folder")).with_context(|| format!("creating {}", path.parent().expect("a folder").display()))?;
    crate::export::write_atomic(path, serde_json::to_string_pretty(&tuning.to_json())?.as_bytes())
}

/// In words, for the adapter line: what decides the tile size on `ctx`, where few tiles split
/// their reductions towards other than the fixed default, where the values are loaded in
/// turn, where the f32 tiles of 128 stage 16 steps per iteration, where they are 64 columns
/// wide, and where they are kept twice in workgroup memory.
pub fn describe(tiles: TileChoice) -> String {
    let size = match (tiles.side, tiles.wide_outputs) {
        (Some(side), _) => format!("tiles of {side} × {side} (HEARTH_TILES)"),
        (None, Some(usize::MAX)) => "tiles of 64 × 64 whatever the output (tuned for this GPU)".to_string(),
        (None, Some(w)) => format!("128 × 128 tiles from {} outputs (tuned for this GPU)", grouped(w)),
        (None, None) => format!("128 × 128 tiles from {} outputs", grouped(WIDE_OUTPUTS)),
    };
    let size = match (tiles.side, tiles.coop_wide_outputs) {
        (None, Some(usize::MAX)) => format!("{size}; cooperative matrices' tiles of 64 × 64 whatever the output (tuned)"),
        (None, Some(w)) => format!("{size}; cooperative matrices' 128 × 128 tiles from {} outputs (tuned)", grouped(w)),
        _ => size,
    };
    let size = match tiles.split_workgroups {
        Some(w) => format!("{size}, {}", split_words(w)),
        None => size,
    };
    let size = match tiles.split_min_steps {
        Some(s) => format!("{size}, {}", split_steps_words(s)),
        None => size,
    };
    let size = match tiles.thin_split {
        Some((w, s)) => format!("{size}, {}", thin_split_words(w, s)),
        None => size,
    };
    let size = match tiles.long_wide {
        true => format!("{size}, f32 reductions of {} steps or more in tiles of 128", grouped(LONG_REDUCTION)),
        false => size,
    };
    let size = match tiles.prefetch {
        Some(false) => format!("{size}, their values loaded in turn"),
        _ => size,
    };
    let size = match tiles.steps {
        Some(16) => format!("{size}, f32 tiles of 128 staging 16 steps per iteration"),
        _ => size,
    };
    let size = match tiles.columns {
        Some(64) => format!("{size}, f32 tiles of 128 rows by 64 columns"),
        _ => size,
    };
    match tiles.buffers {
        Some(2) => format!("{size}, f32 tiles of 128 kept twice in workgroup memory"),
        _ => size,
    }
}

/// In words: where a launch of few tiles splits its reduction towards `workgroups`.
pub fn split_words(workgroups: usize) -> String {
    format!("few tiles' reductions split towards {workgroups} workgroups")
}

/// In words: the fewest steps of each part of a split reduction.
pub fn split_steps_words(steps: usize) -> String {
    format!("split reductions in parts of {steps} steps or more")
}

/// In words: how the launches in thin tiles split their reductions, where not as the others.
pub fn thin_split_words(workgroups: usize, steps: usize) -> String {
    format!("thin outputs' (64 × 32 tiles) towards {workgroups} workgroups in parts of {steps} steps or more")
}

/// `n` with its thousands grouped: 1,048,576.
fn grouped(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Sets the tile size and split on `ctx` as tuned for its adapter, tuning them first where the
/// cache has none: on the GPU kernels of a GPU (HEARTH_TUNE unset), on any adapter
/// (HEARTH_TUNE=1), or never (HEARTH_TUNE=0: the fixed threshold and split, loads a step
/// ahead). HEARTH_TILES wins over all, HEARTH_SPLIT_WORKGROUPS and HEARTH_SPLIT_MIN_STEPS
/// over the tuned split, HEARTH_THIN_SPLIT over the thin tiles' tuned split, HEARTH_TILE_PREFETCH over the tuned order of loads, HEARTH_TILE_STEPS
/// over the tuned steps per iteration, HEARTH_TILE_COLUMNS over the tuned columns,
/// HEARTH_TILE_BUFFERS over the tuned tiles kept.
pub fn apply(ctx: &mut GpuContext) -> Result<()> {
    let wanted = match std::env::var("HEARTH_TUNE").as_deref() {
        Ok("0") => false,
        Ok("1") => true,
        Err(_) => ctx.kernel_paths() == hearth_core::gpu::KernelPaths::Gpu && !ctx.is_software() && !ctx.is_noop(),
        Ok(other) => anyhow::bail!("HEARTH_TUNE={other:?}: expected 0 (the fixed tile-size threshold and split), 1 (tuned on any adapter) or unset (tuned on GPUs)"),
    };
    if !wanted || ctx.tile_choice().side.is_some() {
        return Ok(());
    }
    // (no cache folder, say HOME unset: tuned for this command alone)
    let path = cache_path(ctx);
    let tuned = match path.as_ref().map_err(|e| format!("{e:#}")).and_then(|p| read_cache(p)) {
        Ok(tuned) => tuned,
        Err(why) => {
            match &path {
                Ok(p) if p.exists() => eprintln!("tile tuning: {} cannot be used ({why}); tuning again", p.display()),
                Ok(p) => eprintln!("tuning the tiled matmuls' tiles for this GPU (once; kept in {})", p.display()),
                Err(_) => eprintln!("tuning the tiled matmuls' tiles for this GPU ({why}: not kept)"),
            }
            let start = Instant::now();
            // (a tuning that fails leaves the fixed guess: the command goes on, and says so)
            let tuning = match measure(ctx, false) {
                Ok(tuning) => tuning,
                Err(e) => {
                    eprintln!("tile tuning failed ({e:#}); the tiles stay as the fixed guess has them, {}", describe(TileChoice::default()));
                    return Ok(());
                }
            };
            let at_once = tuning.workgroups_at_once.map_or(String::new(), |w| format!(" ({w} workgroups of tiles of 128 at once)"));
            eprintln!("tuned in {:.1} s{at_once}: {}", start.elapsed().as_secs_f64(), describe(tuning.choice()));
            if let Err(e) = path.as_ref().map_err(|e| anyhow::anyhow!("{e:#}")).and_then(|p| write_cache(p, &tuning)) {
                eprintln!("tile tuning: not kept ({e:#}); the next command tunes again");
            }
            tuning.choice()
        }
    };
    // (HEARTH_SPLIT_WORKGROUPS, HEARTH_SPLIT_MIN_STEPS, HEARTH_THIN_SPLIT and HEARTH_TILE_PREFETCH
    // win over the tuning)
    let now = ctx.tile_choice();
    ctx.set_tile_choice(TileChoice {
        wide_outputs: tuned.wide_outputs,
        coop_wide_outputs: tuned.coop_wide_outputs,
        split_workgroups: now.split_workgroups.or(tuned.split_workgroups),
        split_min_steps: now.split_min_steps.or(tuned.split_min_steps),
        thin_split: now.thin_split.or(tuned.thin_split),
        long_wide: tuned.long_wide,
        prefetch: now.prefetch.or(tuned.prefetch),
        steps: now.steps.or(tuned.steps),
        columns: now.columns.or(tuned.columns),
        buffers: now.buffers.or(tuned.buffers),
        ..now
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fixed guess's choices, nothing timed: each test's tuning sets what differs.
    fn tuned() -> Tuning {
        Tuning {
            wide_outputs: 1 << 20,
            split_workgroups: SPLIT_WORKGROUPS,
            split_min_steps: SPLIT_MIN_STEPS,
            thin_split: None,
            long_wide: false,
            prefetch: true,
            steps: 8,
            columns: 128,
            buffers: 1,
            workgroups_at_once: None,
            coop_wide_outputs: None,
            timed: vec![],
            thin_timed: vec![],
            long_timed: None,
            steps_timed: vec![],
            columns_timed: vec![],
            buffers_timed: vec![],
        }
    }

    fn timed(shape: (usize, usize, usize), ms_64: f64, ms_128: f64) -> Timed {
        split(SPLIT_WORKGROUPS, shape, ms_64, ms_128)
    }

    fn split(split_workgroups: usize, shape: (usize, usize, usize), ms_64: f64, ms_128: f64) -> Timed {
        Timed { format: "f32", shape, split_workgroups, split_min_steps: SPLIT_MIN_STEPS, prefetch: true, ms_64, ms_128 }
    }

    fn short_parts(split_workgroups: usize, split_min_steps: usize, shape: (usize, usize, usize), ms_64: f64, ms_128: f64) -> Timed {
        Timed { split_min_steps, ..split(split_workgroups, shape, ms_64, ms_128) }
    }

    /// A split towards `w` workgroups in parts of the default length.
    fn w(workgroups: usize) -> (usize, usize) {
        (workgroups, SPLIT_MIN_STEPS)
    }

    fn in_turn(split_workgroups: usize, shape: (usize, usize, usize), ms_64: f64, ms_128: f64) -> Timed {
        Timed { prefetch: false, ..split(split_workgroups, shape, ms_64, ms_128) }
    }

    #[test]
    fn the_threshold_minimises_the_total() {
        let threshold = |t: &[Timed]| best_choice(t).0;
        // 128 × 128 tiles lose on the small output, win on the two large ones
        let t = [timed((512, 576, 576), 1.0, 1.5), timed((2048, 576, 576), 2.0, 1.8), timed((2048, 3072, 576), 8.0, 5.0)];
        assert_eq!(threshold(&t), 2048 * 576);
        // never, where they always lose
        let t = [timed((512, 576, 576), 1.0, 1.5), timed((2048, 3072, 576), 5.0, 6.0)];
        assert_eq!(threshold(&t), usize::MAX);
        // from the smallest, where they always win
        let t = [timed((512, 576, 576), 1.5, 1.0), timed((2048, 3072, 576), 6.0, 5.0)];
        assert_eq!(threshold(&t), 512 * 576);
        // not monotone: the total decides (128 × 128 tiles win on the small one and the large
        // one, lose 0.1 on the middle one)
        let t = [timed((512, 576, 576), 1.5, 1.0), timed((2048, 576, 576), 2.0, 2.1), timed((2048, 3072, 576), 8.0, 5.0)];
        assert_eq!(threshold(&t), 512 * 576);
        // a tie keeps the larger threshold
        let t = [timed((512, 576, 576), 1.0, 1.0)];
        assert_eq!(threshold(&t), usize::MAX);
    }

    #[test]
    fn a_split_is_taken_where_it_saves_more_than_the_margin() {
        let (a, b) = ((512, 576, 576), (2048, 3072, 576));
        // the default's best: 64 × 64 tiles, 1.0 + 5.0; 256's: 128 × 128 from b, 1.0 + 4.0
        let t = [timed(a, 1.0, 1.5), timed(b, 5.0, 6.0), split(256, a, 1.0, 1.5), split(256, b, 5.0, 4.0)];
        assert_eq!(best_choice(&t), (2048 * 3072, w(256), true));
        // the least total wins among the splits that save enough
        let t = [timed(a, 1.0, 1.5), timed(b, 5.0, 6.0), split(256, a, 1.0, 1.5), split(256, b, 5.0, 4.0), split(1024, a, 0.8, 1.5), split(1024, b, 5.0, 4.0)];
        assert_eq!(best_choice(&t), (2048 * 3072, w(1024), true));
        // a saving within the margin (6.0 against 5.9) keeps the default
        let t = [timed(a, 1.0, 1.5), timed(b, 5.0, 6.0), split(256, a, 0.9, 1.5), split(256, b, 5.0, 6.0)];
        assert_eq!(best_choice(&t), (usize::MAX, w(SPLIT_WORKGROUPS), true));
        // and so does a slower split
        let t = [timed(a, 1.0, 1.5), timed(b, 5.0, 6.0), split(256, a, 2.0, 2.5), split(256, b, 7.0, 6.0)];
        assert_eq!(best_choice(&t), (usize::MAX, w(SPLIT_WORKGROUPS), true));
        // shorter parts are a split of their own: towards 1024 workgroups, in parts of 32 steps
        // or more, where those save enough over 1024's of 256
        let t = [timed(a, 1.0, 1.5), timed(b, 5.0, 6.0), split(1024, a, 0.9, 1.5), split(1024, b, 5.0, 6.0), short_parts(1024, 32, a, 0.5, 1.5), short_parts(1024, 32, b, 5.0, 6.0)];
        assert_eq!(best_choice(&t), (usize::MAX, (1024, 32), true));
        let words = describe(Tuning { wide_outputs: usize::MAX, split_workgroups: 1024, split_min_steps: 32, ..tuned() }.choice());
        assert!(words.ends_with("split towards 1024 workgroups, split reductions in parts of 32 steps or more"), "{words}");
    }

    #[test]
    fn values_are_loaded_in_turn_where_that_saves_more_than_the_margin() {
        let (a, b) = ((512, 576, 576), (2048, 3072, 576));
        // loaded in turn, the default split's best total is 0.9 + 4.0 (128 × 128 tiles from
        // b) against 1.0 + 5.0 ahead
        let t = [timed(a, 1.0, 1.5), timed(b, 5.0, 6.0), in_turn(SPLIT_WORKGROUPS, a, 0.9, 1.5), in_turn(SPLIT_WORKGROUPS, b, 4.5, 4.0)];
        assert_eq!(best_choice(&t), (2048 * 3072, w(SPLIT_WORKGROUPS), false));
        // within the margin (5.9 against 6.0), a step ahead stays
        let t = [timed(a, 1.0, 1.5), timed(b, 5.0, 6.0), in_turn(SPLIT_WORKGROUPS, a, 0.9, 1.5), in_turn(SPLIT_WORKGROUPS, b, 5.0, 6.0)];
        assert_eq!(best_choice(&t), (usize::MAX, w(SPLIT_WORKGROUPS), true));
        // a split with the values in turn where that pair is the fastest of all
        let t = [
            timed(a, 1.0, 1.5),
            timed(b, 5.0, 6.0),
            in_turn(SPLIT_WORKGROUPS, a, 0.9, 1.5),
            in_turn(SPLIT_WORKGROUPS, b, 5.0, 6.0),
            split(256, a, 0.8, 1.5),
            split(256, b, 5.0, 6.0),
            in_turn(256, a, 0.5, 1.5),
            in_turn(256, b, 5.0, 6.0),
        ];
        assert_eq!(best_choice(&t), (usize::MAX, w(256), false));
        let words = describe(Tuning { wide_outputs: usize::MAX, split_workgroups: 256, prefetch: false, ..tuned() }.choice());
        assert!(words.ends_with("split towards 256 workgroups, their values loaded in turn"), "{words}");
    }

    #[test]
    fn the_cooperative_matrix_kernels_get_a_threshold_of_their_own() {
        let coop = |shape, ms_64, ms_128| Timed { format: COOP_FORMAT, ..timed(shape, ms_64, ms_128) };
        let (a, b) = ((512, 576, 576), (2048, 3072, 576));
        // the tiled kernels' 128 × 128 tiles never pay, the cooperative matrices' do from b
        let t = [timed(a, 1.0, 1.5), timed(b, 5.0, 6.0), coop(a, 0.5, 0.6), coop(b, 2.0, 1.0)];
        assert_eq!(best_choice(&t), (usize::MAX, w(SPLIT_WORKGROUPS), true));
        assert_eq!(coop_threshold(&t), Some(2048 * 3072));
        // none where they were not timed
        assert_eq!(coop_threshold(&t[..2]), None);
        let words = describe(Tuning { wide_outputs: usize::MAX, coop_wide_outputs: coop_threshold(&t), ..tuned() }.choice());
        assert!(words.ends_with("cooperative matrices' 128 × 128 tiles from 6,291,456 outputs (tuned)"), "{words}");
    }

    #[test]
    fn sixteen_steps_are_taken_where_they_save_more_than_the_margin() {
        let t = |ms_8, ms_16| StepsTimed { shape: (2048, 3072, 576), ms_8, ms_16 };
        assert_eq!(best_steps(&[t(2.0, 1.0), t(5.0, 4.5)]), 16);
        // within the margin (5.9 against 6.0), or slower, or nothing timed in tiles of 128: 8
        assert_eq!(best_steps(&[t(1.0, 0.9), t(5.0, 5.0)]), 8);
        assert_eq!(best_steps(&[t(1.0, 2.0)]), 8);
        assert_eq!(best_steps(&[]), 8);
        let words = describe(Tuning { steps: 16, ..tuned() }.choice());
        assert!(words.ends_with("128 × 128 tiles from 1,048,576 outputs (tuned for this GPU), f32 tiles of 128 staging 16 steps per iteration"), "{words}");
    }

    #[test]
    fn sixty_four_columns_are_taken_where_they_save_more_than_the_margin() {
        let t = |ms_128, ms_64| ColumnsTimed { shape: (2048, 3072, 576), ms_128, ms_64 };
        assert_eq!(best_columns(&[t(2.0, 1.0), t(5.0, 4.5)]), 64);
        // within the margin, or slower, or nothing timed in tiles of 128: 128
        assert_eq!(best_columns(&[t(1.0, 0.9), t(5.0, 5.0)]), 128);
        assert_eq!(best_columns(&[t(1.0, 2.0)]), 128);
        assert_eq!(best_columns(&[]), 128);
        let words = describe(Tuning { steps: 16, columns: 64, ..tuned() }.choice());
        assert!(words.ends_with("f32 tiles of 128 staging 16 steps per iteration, f32 tiles of 128 rows by 64 columns"), "{words}");
    }

    #[test]
    fn two_tiles_are_taken_where_they_save_more_than_the_margin() {
        let t = |ms_1, ms_2| BuffersTimed { shape: (2048, 3072, 576), ms_1, ms_2 };
        assert_eq!(best_buffers(&[t(2.0, 1.0), t(5.0, 4.5)]), 2);
        // within the margin, or slower, or not timed (the GPU has not the room): one
        assert_eq!(best_buffers(&[t(1.0, 0.9), t(5.0, 5.0)]), 1);
        assert_eq!(best_buffers(&[t(1.0, 2.0)]), 1);
        assert_eq!(best_buffers(&[]), 1);
        let words = describe(Tuning { columns: 64, buffers: 2, ..tuned() }.choice());
        assert!(words.ends_with("f32 tiles of 128 rows by 64 columns, f32 tiles of 128 kept twice in workgroup memory"), "{words}");
    }

    #[test]
    fn the_thin_products_split_apart_where_that_saves_more_than_the_margin() {
        let t = |split_workgroups, split_min_steps, shape, ms| ThinTimed { shape, batch: 1, split_workgroups, split_min_steps, ms };
        let (a, b) = ((2048, 16, 576), (2048, 16, 1536));
        let common = (256, 64);
        // the least total of the others: (1024, 16), 0.5 + 0.9 against 1.0 + 2.0
        let timed = [t(256, 64, a, 1.0), t(1024, 32, a, 0.6), t(1024, 16, a, 0.5), t(256, 64, b, 2.0), t(1024, 32, b, 1.0), t(1024, 16, b, 0.9)];
        assert_eq!(best_thin_split(&timed, common), Some((1024, 16)));
        // none saves 3 %: as the others
        let timed = [t(256, 64, a, 1.0), t(1024, 32, a, 0.99), t(256, 64, b, 2.0), t(1024, 32, b, 1.99)];
        assert_eq!(best_thin_split(&timed, common), None);
        assert_eq!(best_thin_split(&[], common), None);
        let words = describe(Tuning { split_workgroups: 256, split_min_steps: 64, thin_split: Some((1024, 16)), ..tuned() }.choice());
        assert!(words.ends_with("split reductions in parts of 64 steps or more, thin outputs' (64 × 32 tiles) towards 1024 workgroups in parts of 16 steps or more"), "{words}");
    }

    #[test]
    fn long_reductions_take_tiles_of_128_where_they_save_more_than_the_margin() {
        for (ms_64, ms_128, wide) in [(1.0, 0.6, true), (1.0, 0.98, false), (1.0, 1.5, false)] {
            assert_eq!(best_long_wide(&LongTimed { shape: LONG_SHAPE, ms_64, ms_128 }), wide, "{ms_64} against {ms_128}");
            // (the choice a context reads carries it)
            assert_eq!(Tuning { long_wide: wide, ..tuned() }.choice().long_wide, wide);
        }
        let words = describe(Tuning { long_wide: true, ..tuned() }.choice());
        assert!(words.ends_with("f32 reductions of 16,384 steps or more in tiles of 128"), "{words}");
    }

    #[test]
    fn outputs_are_grouped_by_thousands() {
        assert_eq!([grouped(1), grouped(999), grouped(1000), grouped(1048576)], ["1", "999", "1,000", "1,048,576"]);
    }

    #[test]
    fn a_cache_file_is_read_back_or_refused_with_the_reason() {
        let dir = std::env::temp_dir().join(format!("hearth-tile-tuning-{}", std::process::id()));
        let path = dir.join("gpu.json");
        let tuning = Tuning { wide_outputs: 1 << 21, split_workgroups: 256, prefetch: false, timed: vec![timed((2048, 1024, 576), 2.0, 1.0)], ..tuned() };
        write_cache(&path, &tuning).unwrap();
        assert_eq!(read_cache(&path), Ok(TileChoice { side: None, wide_outputs: Some(1 << 21), coop_wide_outputs: None, split_workgroups: Some(256), split_min_steps: None, thin_split: None, long_wide: false, prefetch: Some(false), steps: None, columns: None, buffers: None }));
        // never wide, the default split and loads (None: as if untuned)
        write_cache(&path, &Tuning { wide_outputs: usize::MAX, ..tuned() }).unwrap();
        assert_eq!(read_cache(&path), Ok(TileChoice { side: None, wide_outputs: Some(usize::MAX), coop_wide_outputs: None, split_workgroups: None, split_min_steps: None, thin_split: None, long_wide: false, prefetch: None, steps: None, columns: None, buffers: None }));
        // parts shorter than the default's
        write_cache(&path, &Tuning { wide_outputs: 1 << 21, split_workgroups: 1024, split_min_steps: 32, ..tuned() }).unwrap();
        assert_eq!(read_cache(&path).map(|c| (c.split_workgroups, c.split_min_steps)), Ok((Some(1024), Some(32))));
        // 16 steps per iteration in tiles of 128
        write_cache(&path, &Tuning { wide_outputs: 1 << 21, steps: 16, ..tuned() }).unwrap();
        assert_eq!(read_cache(&path).map(|c| c.steps), Ok(Some(16)));
        // tiles of 128 rows by 64 columns
        write_cache(&path, &Tuning { wide_outputs: 1 << 21, columns: 64, ..tuned() }).unwrap();
        assert_eq!(read_cache(&path).map(|c| (c.steps, c.columns)), Ok((None, Some(64))));
        // the tiles of 128 kept twice in workgroup memory
        write_cache(&path, &Tuning { wide_outputs: 1 << 21, buffers: 2, ..tuned() }).unwrap();
        assert_eq!(read_cache(&path).map(|c| (c.columns, c.buffers)), Ok((None, Some(2))));
        // the thin tiles' own split
        write_cache(&path, &Tuning { wide_outputs: 1 << 21, thin_split: Some((2048, 16)), ..tuned() }).unwrap();
        assert_eq!(read_cache(&path).map(|c| (c.split_workgroups, c.thin_split)), Ok((None, Some((2048, 16)))));
        // long reductions in tiles of 128 (absent: as their outputs say)
        write_cache(&path, &Tuning { wide_outputs: 1 << 21, long_wide: true, ..tuned() }).unwrap();
        assert_eq!(read_cache(&path).map(|c| c.long_wide), Ok(true));
        // the cooperative-matrix kernels' threshold, a number or never
        for coop in [1 << 20, usize::MAX] {
            write_cache(&path, &Tuning { wide_outputs: 1 << 21, coop_wide_outputs: Some(coop), ..tuned() }).unwrap();
            assert_eq!(read_cache(&path).unwrap().coop_wide_outputs, Some(coop));
        }
        for (text, why) in [
            ("{", "not JSON"),
            (r#"{"version": 5, "wide_outputs": 5, "split_workgroups": 64, "split_min_steps": 256, "prefetch": true}"#, "version 5"),
            (r#"{"version": 12, "wide_outputs": "many", "split_workgroups": 64, "split_min_steps": 256, "prefetch": true, "steps": 8}"#, "wide_outputs \"many\""),
            (r#"{"version": 12, "wide_outputs": 5, "split_min_steps": 256, "prefetch": true}"#, "split_workgroups null"),
            (r#"{"version": 12, "wide_outputs": 5, "split_workgroups": 1, "split_min_steps": 256, "prefetch": true}"#, "split_workgroups 1"),
            (r#"{"version": 12, "wide_outputs": 5, "split_workgroups": 64, "prefetch": true}"#, "split_min_steps null"),
            (r#"{"version": 12, "wide_outputs": 5, "split_workgroups": 64, "split_min_steps": 12, "prefetch": true}"#, "split_min_steps 12"),
            (r#"{"version": 12, "wide_outputs": 5, "split_workgroups": 64, "split_min_steps": 256}"#, "prefetch null"),
            (r#"{"version": 12, "wide_outputs": 5, "split_workgroups": 64, "split_min_steps": 256, "prefetch": 0}"#, "prefetch 0"),
            (r#"{"version": 12, "wide_outputs": 5, "split_workgroups": 64, "split_min_steps": 256, "prefetch": true, "steps": 8, "columns": 128, "buffers": 1, "coop_wide_outputs": 0}"#, "coop_wide_outputs 0"),
            (r#"{"version": 12, "wide_outputs": 5, "split_workgroups": 64, "split_min_steps": 256, "prefetch": true}"#, "steps null"),
            (r#"{"version": 12, "wide_outputs": 5, "split_workgroups": 64, "split_min_steps": 256, "prefetch": true, "steps": 12}"#, "steps 12"),
            (r#"{"version": 12, "wide_outputs": 5, "split_workgroups": 64, "split_min_steps": 256, "prefetch": true, "steps": 8}"#, "columns null"),
            (r#"{"version": 12, "wide_outputs": 5, "split_workgroups": 64, "split_min_steps": 256, "prefetch": true, "steps": 8, "columns": 32}"#, "columns 32"),
            (r#"{"version": 12, "wide_outputs": 5, "split_workgroups": 64, "split_min_steps": 256, "prefetch": true, "steps": 8, "columns": 128}"#, "buffers null"),
            (r#"{"version": 12, "wide_outputs": 5, "split_workgroups": 64, "split_min_steps": 256, "prefetch": true, "steps": 8, "columns": 128, "buffers": 3}"#, "buffers 3"),
            (r#"{"version": 12, "wide_outputs": 5, "split_workgroups": 64, "split_min_steps": 256, "thin_split": {"workgroups": 1024, "min_steps": 12}, "prefetch": true, "steps": 8, "columns": 128, "buffers": 1}"#, "thin_split {\"min_steps\":12"),
            (r#"{"version": 12, "wide_outputs": 5, "split_workgroups": 64, "split_min_steps": 256, "thin_split": 1024, "prefetch": true, "steps": 8, "columns": 128, "buffers": 1}"#, "thin_split 1024"),
            (r#"{"version": 12, "wide_outputs": 5, "split_workgroups": 64, "split_min_steps": 256, "long_wide": 1, "prefetch": true, "steps": 8, "columns": 128, "buffers": 1}"#, "long_wide 1"),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = read_cache(&path).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(read_cache(&path).is_err());
    }
}
