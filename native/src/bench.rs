//! `hearth bench ...`: speed measurements, printed as a table for people or, with `--json`,
//! as one JSON object for scripts (bench/gpu.sh).

use anyhow::Result;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, Subcommand};
use hearth_core::gpu::KernelStat;
use hearth_core::model::Config;
use hearth_core::ops::fma_peak::{fma_peak, fma_peak_coop, fma_peak_coop_flop, fma_peak_coop_outputs, fma_peak_flop};
use hearth_core::ops::residual::residual_forward;
use hearth_core::ops::matmul::{choose_tiling, matmul, matmul_coop_probe, matmul_tiled_probe, matmul_with, tiled_for, Accumulate, MatmulDims, MatmulKind, MatmulTiling, TileProbe};
use hearth_core::ops::matmul_quant::{matmul_quant, matmul_quant_with, GpuQuantWeight, QuantBlock};
use hearth_core::quant::{QuantFormat, QuantTensor};
use hearth_core::rng::Rng;
use hearth_core::{GpuBuffer, GpuContext, Profile};
use serde_json::{json, Value};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Time every matmul variant (f32, f16 and each quantized format; forward and backward)
    /// at a model's shapes and at 4096³.
    ///
    /// Example: hearth bench ops --quick
    Ops(OpsArgs),
    /// Prefill and decode tokens/s of a model (HF folder or .gguf).
    ///
    /// Example: hearth bench generate SmolLM2-135M-Instruct.Q4_1.gguf --prompt-tokens 128 --new-tokens 64
    Generate(crate::bench_generate::BenchGenerateArgs),
    /// Training tokens/s, the step's host and GPU time, launches and peak GPU memory on
    /// synthetic examples.
    ///
    /// Example: hearth bench train SmolLM2-135M-Instruct.Q4_1.gguf --seq-len 128 --batch-size 4
    Train(crate::bench_train::BenchTrainArgs),
    /// Time the tiled f32 and Q4_1 forwards in 64 × 64 and 128 × 128 output tiles at training's
    /// shapes and keep, for this GPU, the output size from which 128 × 128 tiles pay (what
    /// the first command on a GPU does by itself; HEARTH_TUNE says when).
    ///
    /// Example: hearth bench tiles
    Tiles(TilesArgs),
}

#[derive(Args)]
pub struct TilesArgs {
    /// Small shapes, for CPU emulators; the result is shown, not kept.
    #[arg(long)]
    quick: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct OpsArgs {
    /// Small shapes and fewer repetitions (for CPU emulators such as lavapipe).
    #[arg(long)]
    quick: bool,
    /// Only rows whose kernel name contains this.
    #[arg(long)]
    filter: Option<String>,
    /// Take the matmul shapes from this model's config (HF folder or .gguf); default:
    /// SmolLM2-135M's.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Rows of x in the model-shape matmuls (tokens in a training step: 4 × 512).
    #[arg(long, default_value_t = 2048)]
    tokens: usize,
    /// Leave out the 4096 × 4096 × 4096 rows (minutes on a CPU emulator).
    #[arg(long)]
    no_square: bool,
    /// Time these shapes (MxNxK, repeatable) instead of the model's and 4096³: a sweep that
    /// separates a launch's fixed cost from its work.
    #[arg(long, value_parser = parse_shape)]
    shape: Vec<(usize, usize, usize)>,
    /// Timed launches per batch at least (the fastest of 5 batches counts; more where fewer
    /// would run under 10 ms); default 5, 2 with --quick.
    #[arg(long)]
    reps: Option<usize>,
    /// Also time the f32 forward's probes in tiles of 128 × 128 (loaded in turn): its
    /// arithmetic with the loads from memory left out after the first iteration, and with the
    /// staging left out too ("f32 forward, probe: ..." rows; not products); and, where the
    /// adapter has cooperative matrices, their forward's inner loop alone ("f16 coop forward,
    /// probe: sums only").
    #[arg(long)]
    probes: bool,
    #[command(flatten)]
    stats: crate::kernel_stats::KernelStatsArgs,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Ops(a) => ops(a),
        BenchCommand::Generate(a) => crate::bench_generate::run(a),
        BenchCommand::Train(a) => crate::bench_train::run(a),
        BenchCommand::Tiles(a) => tiles(a),
    }
}

/// `bench tiles`: the tile tuning measured afresh (and kept, but for `--quick`).
fn tiles(a: TilesArgs) -> Result<()> {
    use crate::tile_tuning::{cache_path, describe, measure, write_cache};
    let mut ctx = crate::open_gpu()?;
    let tuning = measure(&mut ctx, a.quick)?;
    let path = cache_path(&ctx)?;
    if !a.quick {
        write_cache(&path, &tuning)?;
    }
    if a.json {
        let mut v = tuning.to_json();
        v["bench"] = json!("tiles");
        v["adapter"] = adapter_json(&ctx);
        v["cache"] = json!(path);
        v["kept"] = json!(!a.quick);
        println!("{v}");
        return Ok(());
    }
    println!("adapter: {}", ctx.summary());
    if let Some(w) = tuning.workgroups_at_once {
        println!("workgroups of f32 tiles of 128 this GPU runs at once: {w} (a split candidate)");
    }
    println!("{:<8} {:<22} {:>10} {:>6} {:>6} {:>8} {:>10} {:>10}", "format", "shape", "outputs", "split", "steps", "loads", "ms 64×64", "ms 128×128");
    for t in &tuning.timed {
        let (m, n, k) = t.shape;
        let loads = if t.prefetch { "ahead" } else { "in turn" };
        println!("{:<8} {:<22} {:>10} {:>6} {:>6} {:>8} {:>10.3} {:>10.3}", t.format, format!("M{m} N{n} K{k}"), m * n, t.split_workgroups, t.split_min_steps, loads, t.ms_64, t.ms_128);
    }
    for t in &tuning.thin_timed {
        let (m, n, k) = t.shape;
        println!("f32 thin, {t_batch}M{m} N{n} K{k} in tiles of 64 × 32, split towards {} workgroups in parts of {} steps or more: {:.3} ms", t.split_workgroups, t.split_min_steps, t.ms, t_batch = if t.batch > 1 { format!("{} × ", t.batch) } else { String::new() });
    }
    if let Some(t) = &tuning.long_timed {
        let (m, n, k) = t.shape;
        println!("f32 input gradient, {m} × {k} over {n} steps (the lm_head's): {:.3} ms in tiles of 64, {:.3} ms in tiles of 128", t.ms_64, t.ms_128);
    }
    for t in &tuning.steps_timed {
        let (m, n, k) = t.shape;
        println!("f32 in tiles of 128, M{m} N{n} K{k}: {:.3} ms staging 8 steps per iteration, {:.3} ms staging 16", t.ms_8, t.ms_16);
    }
    for t in &tuning.columns_timed {
        let (m, n, k) = t.shape;
        println!("f32 in tiles of 128 rows, M{m} N{n} K{k}: {:.3} ms 128 columns wide, {:.3} ms 64 columns wide", t.ms_128, t.ms_64);
    }
    for t in &tuning.buffers_timed {
        let (m, n, k) = t.shape;
        println!("f32 in tiles of 128 rows, M{m} N{n} K{k}: {:.3} ms kept once in workgroup memory, {:.3} ms twice", t.ms_1, t.ms_2);
    }
    println!("{}{}", describe(tuning.choice()), if a.quick { String::new() } else { format!(": kept in {}", path.display()) });
    Ok(())
}

/// The adapter as the JSON reports name it.
pub fn adapter_json(ctx: &GpuContext) -> Value {
    let s = ctx.summary();
    json!({
        "name": s.name,
        "backend": s.backend,
        "device_type": s.device_type,
        "driver": s.driver,
        "shader_f16": s.shader_f16,
        "subgroups": s.subgroups,
        "subgroup_reductions": ctx.subgroup_reductions(),
        "cooperative_matrix": { "offered": ctx.offers_cooperative_matrix().0, "usable": ctx.offers_cooperative_matrix().1 },
        "f16_matmuls": ctx.f16_matmuls(),
        "shader_checks": { "bounds": ctx.shader_checks().bounds, "loops": ctx.shader_checks().loops, "zeroing": ctx.shader_checks().zeroing },
        "gpu_timestamps": ctx.has_gpu_timer(),
        "tiles": {
            "side": ctx.tile_choice().side,
            "wide_outputs": ctx.tile_choice().wide_outputs.filter(|&w| w != usize::MAX),
            "never_wide": ctx.tile_choice().wide_outputs == Some(usize::MAX),
            "coop_wide_outputs": ctx.tile_choice().coop_wide_outputs.filter(|&w| w != usize::MAX),
            "coop_never_wide": ctx.tile_choice().coop_wide_outputs == Some(usize::MAX),
            "split_workgroups": ctx.tile_choice().split_workgroups,
            "split_min_steps": ctx.tile_choice().split_min_steps,
            "thin_split": ctx.tile_choice().thin_split.map(|(w, s)| json!({ "workgroups": w, "min_steps": s })),
            "long_wide": ctx.tile_choice().long_wide,
            "prefetch": ctx.tile_prefetch(),
            "steps": ctx.tile_steps(),
            "columns": ctx.tile_columns(),
            "buffers": ctx.tile_buffers(),
            "in_words": crate::tile_tuning::describe(ctx.tile_choice()),
        },
    })
}

/// The launches of a profile, per kernel (entry point and variant), divided by `per`.
pub fn kernels_json(p: &Profile, per: f64) -> Value {
    stats_json(&p.by_kernel(), p.kernel_times.is_some(), per)
}

/// With kernel times, the launches that count FLOPs by kernel and grid (each shape apart);
/// else null.
pub fn grids_json(p: &Profile, per: f64) -> Value {
    if p.kernel_times.is_some() { stats_json(&p.by_grid(), true, per) } else { Value::Null }
}

fn stats_json(stats: &BTreeMap<String, KernelStat>, timed: bool, per: f64) -> Value {
    stats
        .iter()
        .map(|(name, k)| {
            let mut v = json!({ "kernel": name, "launches": k.launches as f64 / per, "gflop": k.flops / per / 1e9 });
            if timed {
                v["ms"] = json!(k.ms / per);
            }
            v
        })
        .collect()
}

/// Runs `launch` once to warm up (pipeline compile) inside a profile, which names the
/// kernels it ran, and once more alone; then `BATCHES` batches of `reps` runs or more: as many
/// as fill `batch_ms` at the lone run's pace (at most `MAX_REPS`). Submitting a batch and
/// waiting for it cost the same whatever the kernel (on the 2026-12-04 H200 the same
/// 2048 × 1536 × 576 product read 0.43 and 0.91 ms in batches of 3), so short batches of
/// short launches time the waiting. Returns ms per run of the fastest batch (on a shared
/// machine the slower batches measure the neighbours, not the kernel) and the kernels.
pub fn time(ctx: &GpuContext, reps: usize, batch_ms: f64, mut launch: impl FnMut()) -> Result<(f64, Vec<String>)> {
    const BATCHES: usize = 5;
    const MAX_REPS: usize = 1000;
    ctx.profile_begin();
    launch();
    let kernels = pollster::block_on(ctx.profile_end())?.kernels.into_keys().collect();
    let start = Instant::now();
    launch();
    pollster::block_on(ctx.finish())?;
    let alone = start.elapsed().as_secs_f64() * 1e3;
    let reps = reps.max(((batch_ms / alone.max(1e-3)).ceil() as usize).min(MAX_REPS));
    let mut best = f64::INFINITY;
    for _ in 0..BATCHES {
        let start = Instant::now();
        for _ in 0..reps {
            launch();
        }
        pollster::block_on(ctx.finish())?;
        best = best.min(start.elapsed().as_secs_f64() * 1e3 / reps as f64);
    }
    Ok((best, kernels))
}

/// How long a batch of `bench ops`' launches runs at least (ms).
pub const BATCH_MS: f64 = 10.0;

pub fn random(ctx: &GpuContext, rng: &mut Rng, n: usize) -> Result<GpuBuffer> {
    Ok(ctx.upload_f32(&rng.vec_uniform(n, -1.0, 1.0))?)
}

struct Row {
    /// What was timed: format and product, e.g. "f32 forward", "q4_1 backward_input".
    op: String,
    /// The kernel(s) that ran it, with their variant.
    kernels: Vec<String>,
    /// (M, N, K) as MatmulDims names them.
    shape: (usize, usize, usize),
    ms: f64,
    /// (amount, unit) per second: GFLOP/s or GB/s.
    rate: (f64, &'static str),
}

/// The distinct (N, K) of a model's linear layers, with their names.
fn linear_shapes(cfg: &Config) -> Vec<(String, usize, usize)> {
    let (c, i) = (cfg.hidden_size, cfg.intermediate_size);
    let (q, kv) = (cfg.n_heads * cfg.head_size, cfg.n_kv_heads * cfg.head_size);
    let all = [("q_proj", q, c), ("k_proj", kv, c), ("v_proj", kv, c), ("o_proj", c, q), ("gate_proj", i, c), ("up_proj", i, c), ("down_proj", c, i), ("lm_head", cfg.vocab_size, c)];
    let mut shapes: Vec<(String, usize, usize)> = Vec::new();
    for (name, n, k) in all {
        match shapes.iter_mut().find(|s| (s.1, s.2) == (n, k)) {
            Some(s) => s.0 = format!("{}, {name}", s.0),
            None => shapes.push((name.to_string(), n, k)),
        }
    }
    shapes
}

/// The rows of matmul_coop.wgsl's forward and input gradient (where the adapter has
/// cooperative matrices), and after a format's name quant_coop.wgsl's.
const COOP_OP: &str = "f16 coop forward";
const COOP_DX_OP: &str = "f16 coop backward_input";
/// The rows of the tiled forward and input gradient with f16 tiles (where the adapter has
/// shader-f16; the input gradient's rows scaled first), and after a format's name the quantized
/// kernels'.
const F16_TILES_OP: &str = "f16 tiles forward";
const F16_TILES_DX_OP: &str = "f16 tiles backward_input";

/// The row of the f32 forward in the workgroup tiles `matmul` did not pick (GPU kernels).
const OTHER_TILES_OP: &str = "f32 forward, other tiles";

/// SmolLM2-135M's sizes, for `bench ops` without `--model`.
const SMOLLM2_SHAPES: [(&str, usize, usize); 5] =
    [("q_proj, o_proj", 576, 576), ("k_proj, v_proj", 192, 576), ("gate_proj, up_proj", 1536, 576), ("down_proj", 576, 1536), ("lm_head", 49152, 576)];

fn ops(a: OpsArgs) -> Result<()> {
    let ctx = crate::open_gpu()?;
    let reps = a.reps.unwrap_or(if a.quick { 2 } else { 5 }).max(1);
    let wanted = |name: &str| a.filter.as_deref().is_none_or(|f| name.contains(f));
    // (label, M, N, K)
    let mut shapes: Vec<(String, usize, usize, usize)> = Vec::new();
    if !a.shape.is_empty() {
        shapes.extend(a.shape.iter().map(|&(m, n, k)| ("--shape".to_string(), m, n, k)));
    } else if a.quick {
        shapes.push(("square".into(), 256, 256, 256));
    } else {
        let named = match &a.model {
            Some(path) => linear_shapes(&crate::load::load_config(path)?.0),
            None => SMOLLM2_SHAPES.iter().map(|&(l, n, k)| (l.to_string(), n, k)).collect(),
        };
        shapes.extend(named.into_iter().map(|(l, n, k)| (l, a.tokens, n, k)));
        if !a.no_square {
            shapes.push(("square".into(), 4096, 4096, 4096));
        }
        // An operand past what one binding holds is split by the model (the lm_head and the
        // logits, on adapters with WebGPU's 128 MiB), never given to one matmul launch.
        shapes.retain(|(label, m, n, k)| {
            let largest = 4 * (m * k).max(n * k).max(m * n) as u64;
            let fits = largest <= ctx.max_bound_bytes();
            if !fits {
                eprintln!(
                    "bench ops: {label} ({m} × {n} × {k}) left out: an operand of {} MiB is past this adapter's storage binding limit ({} MiB), where the model splits it",
                    largest >> 20,
                    ctx.max_bound_bytes() >> 20
                );
            }
            fits
        });
    }
    // cooperative matrices on a context of their own (see open_coop_gpu)
    let coop_wanted = wanted(PEAK_COOP_OP) || [COOP_OP, COOP_DX_OP].iter().any(|op| wanted(op) || QuantFormat::ALL.iter().any(|&f| wanted(&format!("{} {op}", format_name(f)))));
    let coop = if coop_wanted { crate::open_coop_gpu(&ctx)? } else { None };
    let start = Instant::now();
    op_rows(&ctx, coop.as_ref(), &a, &shapes, reps, Pass::Compile)?;
    let compile_pass_ms = start.elapsed().as_secs_f64() * 1e3;
    keep_busy(&ctx, WARM_MS)?;
    let rows = op_rows(&ctx, coop.as_ref(), &a, &shapes, reps, Pass::Time)?;
    let mut made = ctx.kernels_made();
    made.extend(coop.iter().flat_map(|c| c.kernels_made()));
    let kernel_stats = a.stats.collect(&ctx, &made)?;
    if a.json {
        let rows: Vec<Value> = rows
            .iter()
            .map(|r| json!({ "op": r.op, "kernels": r.kernels, "m": r.shape.0, "n": r.shape.1, "k": r.shape.2, "ms": r.ms, "rate": r.rate.0, "unit": r.rate.1 }))
            .collect();
        let shapes: Vec<Value> = shapes.iter().map(|(l, m, n, k)| json!({ "layers": l, "m": m, "n": n, "k": k })).collect();
        println!("{}", json!({ "bench": "ops", "adapter": adapter_json(&ctx), "shapes": shapes, "rows": rows, "compile_pass_ms": compile_pass_ms, "kernel_stats": kernel_stats }));
    } else {
        println!("adapter: {}", ctx.summary());
        println!("every launch run once first, untimed (its kernels compiled): {:.1} s", compile_pass_ms / 1e3);
        for (l, m, n, k) in &shapes {
            println!("shape M{m} N{n} K{k}: {l}");
        }
        println!("{:<30} {:<22} {:>10} {:>16}  kernel", "op", "shape", "ms", "rate");
        for r in &rows {
            let (m, n, k) = r.shape;
            println!("{:<30} {:<22} {:>10.3} {:>9.1} {:<7} {}", r.op, format!("M{m} N{n} K{k}"), r.ms, r.rate.0, r.rate.1, r.kernels.join(" + "));
        }
        if let Some(stats) = &kernel_stats {
            crate::kernel_stats::print_kernel_stats(stats);
        }
    }
    Ok(())
}

/// What a pass over `bench ops`' rows does with each launch: run it once (`Compile`: its
/// kernels' pipelines made, nothing timed), or time it. A first pass compiles every kernel, so
/// that the timed pass runs its launches back to back: on the 2026-12-04 H200 the first shape's
/// rows, timed between the compiles of their kernels, read up to 4× slower for a stretch of
/// rows (Q8_0's and NF4's in all three runs), the same kernels at full speed at the next shape:
/// most likely a GPU left idle while the host compiles, its clocks lowered.
#[derive(Clone, Copy, PartialEq)]
enum Pass {
    Compile,
    Time,
}

impl Pass {
    /// ms per run of `launch` and the kernels it ran (`time`); (0, none) in a compile pass.
    fn time(self, ctx: &GpuContext, reps: usize, batch_ms: f64, mut launch: impl FnMut()) -> Result<(f64, Vec<String>)> {
        match self {
            Pass::Compile => {
                launch();
                pollster::block_on(ctx.finish())?;
                Ok((0.0, Vec::new()))
            }
            Pass::Time => time(ctx, reps, batch_ms, launch),
        }
    }

    /// An operand of `len` values: uniform in [-1, 1) where timed, zeros in a compile pass
    /// (which draws nothing from `rng`, so that the timed pass gets the same values either way).
    fn operand(self, ctx: &GpuContext, rng: &mut Rng, len: usize) -> Result<GpuBuffer> {
        match self {
            Pass::Compile => Ok(ctx.alloc_f32(len)?),
            Pass::Time => random(ctx, rng, len),
        }
    }

    /// An n × k weight in `format`, quantized from uniform values where timed, from zeros in
    /// a compile pass.
    fn weight(self, format: QuantFormat, rng: &mut Rng, n: usize, k: usize) -> Result<QuantTensor> {
        let values = match self {
            Pass::Compile => vec![0.0; n * k],
            Pass::Time => rng.vec_uniform(n * k, -1.0, 1.0),
        };
        Ok(QuantTensor::quantize(format, &values, n, k)?)
    }
}

/// How long `bench ops` and the tile tuning keep the GPU busy before they time (ms): its
/// clocks back up after their compiles, when it mostly waited on the host.
pub const WARM_MS: f64 = 300.0;

/// Runs shaders/fma_peak.wgsl's arithmetic back to back for `ms`, in batches of about 10 ms
/// (a launch alone would leave the GPU waiting on each submission).
pub fn keep_busy(ctx: &GpuContext, ms: f64) -> Result<()> {
    let n = 1 << 16;
    let out = ctx.alloc_f32(n)?;
    let start = Instant::now();
    // ms that `launches` launches took, submitted together
    let run = |launches: usize| -> Result<f64> {
        let began = Instant::now();
        for _ in 0..launches {
            fma_peak(ctx, &out, n, 256, 0.999, 0.001)?;
        }
        pollster::block_on(ctx.finish())?;
        Ok(began.elapsed().as_secs_f64() * 1e3)
    };
    // (the first launch may compile the kernel: the second sizes the batches)
    run(1)?;
    let launches = (10.0 / run(1)?.max(1e-3)).ceil().clamp(1.0, 1000.0) as usize;
    while start.elapsed().as_secs_f64() * 1e3 < ms {
        run(launches)?;
    }
    Ok(())
}

/// `bench ops`' rows over `shapes` (label, M, N, K): the GPU's peaks, then each shape's
/// products, then one row of x per format; on the same operands in every pass.
fn op_rows(ctx: &GpuContext, coop: Option<&GpuContext>, a: &OpsArgs, shapes: &[(String, usize, usize, usize)], reps: usize, pass: Pass) -> Result<Vec<Row>> {
    let mut rng = Rng::new(0);
    let wanted = |name: &str| a.filter.as_deref().is_none_or(|f| name.contains(f));
    let mut rows = peak_rows(ctx, coop, a.quick, reps, pass, &wanted)?;
    for (_, m, n, k) in shapes {
        let (m, n, k) = (*m, *n, *k);
        let flop = 2.0 * (m * n * k) as f64;
        let d = MatmulDims::new(m, n, k);
        // the f16 products: on cooperative matrices (a context of their own), in f16 tiles
        let coop_rows = [(COOP_OP, MatmulKind::Forward), (COOP_DX_OP, MatmulKind::BackwardInput)].map(|(op, kind)| (op, kind, coop, MatmulTiling::Coop));
        let tile_rows = [(F16_TILES_OP, MatmulKind::Forward), (F16_TILES_DX_OP, MatmulKind::BackwardInput)].map(|(op, kind)| (op, kind, Some(ctx).filter(|c| c.has_f16()), tiled_for(ctx, kind, &d, true)));
        for (op, kind, on, tiling) in coop_rows.into_iter().chain(tile_rows) {
            let Some(on) = on.filter(|_| wanted(op)) else { continue };
            let (a_len, b_len, c_len) = kind.operand_lens(&MatmulDims::new(m, n, k));
            let (x, w, y) = (pass.operand(on, &mut rng, a_len)?, pass.operand(on, &mut rng, b_len)?, pass.operand(on, &mut rng, c_len)?);
            let (ms, kernels) = pass.time(on, reps, BATCH_MS, || matmul_with(on, kind, tiling, &y, &x, &w, d, Accumulate::OVERWRITE).expect("matmul launch"))?;
            rows.push(Row { op: op.into(), kernels, shape: (m, n, k), ms, rate: (flop / ms / 1e6, "GFLOP/s") });
        }
        for kind in [MatmulKind::Forward, MatmulKind::BackwardInput, MatmulKind::BackwardWeight] {
            let op = format!("f32 {}", kind_name(kind));
            if !wanted(&op) {
                continue;
            }
            let (a_len, b_len, c_len) = kind.operand_lens(&MatmulDims::new(m, n, k));
            let (x, w, y) = (pass.operand(ctx, &mut rng, a_len)?, pass.operand(ctx, &mut rng, b_len)?, pass.operand(ctx, &mut rng, c_len)?);
            let (ms, kernels) = pass.time(ctx, reps, BATCH_MS, || matmul(ctx, kind, &y, &x, &w, d, Accumulate::OVERWRITE).expect("matmul launch"))?;
            rows.push(Row { op, kernels, shape: (m, n, k), ms, rate: (flop / ms / 1e6, "GFLOP/s") });
        }
        for probe in TileProbe::ALL {
            let op = format!("f32 forward, probe: {}", probe.name());
            if !a.probes || !wanted(&op) || k < 8 {
                continue;
            }
            let (x, w, y) = (pass.operand(ctx, &mut rng, m * k)?, pass.operand(ctx, &mut rng, n * k)?, pass.operand(ctx, &mut rng, m * n)?);
            let (ms, kernels) = pass.time(ctx, reps, BATCH_MS, || matmul_tiled_probe(ctx, probe, &y, &x, &w, d).expect("probe launch"))?;
            rows.push(Row { op, kernels, shape: (m, n, k), ms, rate: (flop / ms / 1e6, "GFLOP/s") });
        }
        // the cooperative-matrix forward's inner loop alone (its tiles of 128 staged once)
        let op = format!("{COOP_OP}, probe: sums only");
        if let Some(on) = coop.filter(|_| a.probes && wanted(&op) && k >= 32) {
            let (x, w, y) = (pass.operand(on, &mut rng, m * k)?, pass.operand(on, &mut rng, n * k)?, pass.operand(on, &mut rng, m * n)?);
            let (ms, kernels) = pass.time(on, reps, BATCH_MS, || matmul_coop_probe(on, &y, &x, &w, d).expect("probe launch"))?;
            rows.push(Row { op, kernels, shape: (m, n, k), ms, rate: (flop / ms / 1e6, "GFLOP/s") });
        }
        // the f32 forward in the tile size `matmul` did not pick (64 × 64 against 128 × 128
        // workgroup tiles): where the threshold between them (WIDE_OUTPUTS) should be
        let other = match choose_tiling(ctx, MatmulKind::Forward, &d) {
            MatmulTiling::Tiled => Some(MatmulTiling::TiledWide),
            MatmulTiling::TiledWide => Some(MatmulTiling::Tiled),
            _ => None,
        };
        if let Some(tiling) = other.filter(|_| wanted(OTHER_TILES_OP)) {
            let (x, w, y) = (pass.operand(ctx, &mut rng, m * k)?, pass.operand(ctx, &mut rng, n * k)?, pass.operand(ctx, &mut rng, m * n)?);
            let (ms, kernels) = pass.time(ctx, reps, BATCH_MS, || matmul_with(ctx, MatmulKind::Forward, tiling, &y, &x, &w, d, Accumulate::OVERWRITE).expect("matmul launch"))?;
            rows.push(Row { op: OTHER_TILES_OP.into(), kernels, shape: (m, n, k), ms, rate: (flop / ms / 1e6, "GFLOP/s") });
        }
        for format in QuantFormat::ALL {
            let wanted_kinds: Vec<MatmulKind> =
                [MatmulKind::Forward, MatmulKind::BackwardInput].into_iter().filter(|&kind| wanted(&format!("{} {}", format_name(format), kind_name(kind)))).collect();
            // in f16: on cooperative matrices (a context of their own), in f16 tiles
            let f16_tiles = Some(ctx).filter(|c| c.has_f16());
            let f16_kinds: Vec<(MatmulKind, String, QuantBlock, &GpuContext)> = [
                (MatmulKind::Forward, COOP_OP, QuantBlock::Coop, coop),
                (MatmulKind::BackwardInput, COOP_DX_OP, QuantBlock::Coop, coop),
                (MatmulKind::Forward, F16_TILES_OP, QuantBlock::TiledF16, f16_tiles),
                (MatmulKind::BackwardInput, F16_TILES_DX_OP, QuantBlock::TiledF16, f16_tiles),
            ]
            .into_iter()
            .filter_map(|(kind, op, block, on)| {
                let op = format!("{} {op}", format_name(format));
                Some((kind, op.clone(), block, on.filter(|_| wanted(&op))?))
            })
            .collect();
            if wanted_kinds.is_empty() && f16_kinds.is_empty() {
                continue;
            }
            let t = pass.weight(format, &mut rng, n, k)?;
            let gw = GpuQuantWeight::upload(ctx, &t)?;
            for kind in wanted_kinds {
                let (in_len, _, out_len) = kind.operand_lens(&MatmulDims::new(m, n, k));
                let (x, y) = (pass.operand(ctx, &mut rng, in_len)?, pass.operand(ctx, &mut rng, out_len)?);
                let (ms, kernels) = pass.time(ctx, reps, BATCH_MS, || matmul_quant(ctx, kind, &y, &x, &gw, m, Accumulate::OVERWRITE).expect("launch"))?;
                rows.push(Row { op: format!("{} {}", format_name(format), kind_name(kind)), kernels, shape: (m, n, k), ms, rate: (flop / ms / 1e6, "GFLOP/s") });
            }
            for (kind, op, block, on) in f16_kinds {
                let (in_len, _, out_len) = kind.operand_lens(&MatmulDims::new(m, n, k));
                let (x, y) = (pass.operand(on, &mut rng, in_len)?, pass.operand(on, &mut rng, out_len)?);
                // (the cooperative matrices' context is a device of its own)
                let on_coop = if block == QuantBlock::Coop { Some(GpuQuantWeight::upload(on, &t)?) } else { None };
                let gw = on_coop.as_ref().unwrap_or(&gw);
                let (ms, kernels) = pass.time(on, reps, BATCH_MS, || matmul_quant_with(on, block, kind, &y, &x, gw, m, Accumulate::OVERWRITE, None).expect("launch"))?;
                rows.push(Row { op, kernels, shape: (m, n, k), ms, rate: (flop / ms / 1e6, "GFLOP/s") });
            }
        }
    }
    // One row of x (decoding a token): bound by reading the weight, so the rate is its bytes/s.
    let (n, k) = if a.quick { (256, 256) } else { (shapes[0].2.max(1536), shapes[0].3) };
    for format in QuantFormat::ALL {
        let op = format!("{} forward_row", format_name(format));
        if !wanted(&op) {
            continue;
        }
        let t = pass.weight(format, &mut rng, n, k)?;
        let gw = GpuQuantWeight::upload(ctx, &t)?;
        let (x, y) = (pass.operand(ctx, &mut rng, k)?, pass.operand(ctx, &mut rng, n)?);
        let (ms, kernels) = pass.time(ctx, reps * 10, BATCH_MS, || matmul_quant(ctx, MatmulKind::Forward, &y, &x, &gw, 1, Accumulate::OVERWRITE).expect("launch"))?;
        rows.push(Row { op, kernels, shape: (1, n, k), ms, rate: (gw.bytes() as f64 / ms / 1e6, "GB/s") });
    }
    Ok(rows)
}

/// The rows of this GPU's practical peaks, as the matmuls' rows are read against them:
/// "peak fma", its f32 rate with no memory traffic (shaders/fma_peak.wgsl; M: invocations,
/// N: chains each, K: rounds), and "peak a + b", the bandwidth of residual_forward over
/// buffers as large as one binding holds, up to 256 MiB (its 12 bytes a value read and
/// written; M: values), and the "peak launches" rows (a launch's own cost). Where there is a
/// context with cooperative matrices (`coop`), "peak coop", their rate with no memory traffic
/// (shaders/fma_peak_coop.wgsl; M: workgroups, N: products per block, K: rounds): what the
/// "f16 coop" rows are read against, as the f32 ones against "peak fma".
fn peak_rows(ctx: &GpuContext, coop: Option<&GpuContext>, quick: bool, reps: usize, pass: Pass, wanted: &dyn Fn(&str) -> bool) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    if wanted(PEAK_FMA_OP) {
        let (n, iters) = if quick { (1 << 16, 256) } else { (1 << 20, 1024) };
        let out = ctx.alloc_f32(n)?;
        let (ms, kernels) = pass.time(ctx, reps, BATCH_MS, || fma_peak(ctx, &out, n, iters, 0.999, 0.001).expect("fma_peak launch"))?;
        rows.push(Row { op: PEAK_FMA_OP.into(), kernels, shape: (n, 32, iters), ms, rate: (fma_peak_flop(n, iters) / ms / 1e6, "GFLOP/s") });
    }
    if let Some((on, shape)) = coop.and_then(|c| Some((c, c.coop_shape()?))).filter(|_| wanted(PEAK_COOP_OP)) {
        // (an H100 at 300 TFLOP/s: some 2 ms a launch)
        let (groups, iters) = if quick { (16, 16) } else { (2048, 1024) };
        let side = shape.side as usize;
        let out = on.alloc_f32(groups * fma_peak_coop_outputs(side))?;
        let (ms, kernels) = pass.time(on, reps, BATCH_MS, || fma_peak_coop(on, &out, groups, iters).expect("fma_peak_coop launch"))?;
        rows.push(Row { op: PEAK_COOP_OP.into(), kernels, shape: (groups, 8, iters), ms, rate: (fma_peak_coop_flop(side, groups, iters) / ms / 1e6, "GFLOP/s") });
    }
    if wanted(PEAK_ADD_OP) {
        let n = if quick { 1 << 20 } else { (ctx.max_bound_bytes().min(256 << 20) / 4) as usize };
        let mut rng = Rng::new(1);
        let (a, b, out) = (pass.operand(ctx, &mut rng, n)?, pass.operand(ctx, &mut rng, n)?, ctx.alloc_f32(n)?);
        let (ms, kernels) = pass.time(ctx, reps, BATCH_MS, || residual_forward(ctx, &out, &a, &b, n).expect("residual_forward launch"))?;
        rows.push(Row { op: PEAK_ADD_OP.into(), kernels, shape: (n, 1, 1), ms, rate: (12.0 * n as f64 / ms / 1e6, "GB/s") });
    }
    // (one workgroup of one round: the launch's own cost, whatever the work)
    let launches: Vec<(&str, bool)> = [(PEAK_LAUNCH_CHAINED_OP, false), (PEAK_LAUNCH_APART_OP, true)].into_iter().filter(|(op, _)| wanted(op)).collect();
    let outs = match launches.is_empty() {
        true => Vec::new(),
        false => (0..LAUNCH_OUTPUTS).map(|_| ctx.alloc_f32(256)).collect::<hearth_core::Result<Vec<_>>>()?,
    };
    for (op, apart) in launches {
        let mut turn = 0;
        let (ms, kernels) = pass.time(ctx, reps * 10, BATCH_MS, || {
            let out = &outs[if apart { turn % LAUNCH_OUTPUTS } else { 0 }];
            turn += 1;
            fma_peak(ctx, out, 256, 1, 0.999, 0.001).expect("fma_peak launch")
        })?;
        rows.push(Row { op: op.into(), kernels, shape: (256, 32, 1), ms, rate: (1.0 / ms, "k/s") });
    }
    Ok(rows)
}

const PEAK_FMA_OP: &str = "peak fma";
const PEAK_COOP_OP: &str = "peak coop";
const PEAK_ADD_OP: &str = "peak a + b";
/// "peak launches": what a launch costs with next to no work (fma_peak's one workgroup of one
/// round; M, N, K as "peak fma"'s; the rate in thousands of launches a second), each writing
/// the output the last one wrote (so that the driver orders them, a barrier between each two,
/// as between most of a training step's launches), or LAUNCH_OUTPUTS outputs in turn (nothing
/// to order between neighbours). A step of some 1,500 launches pays this cost each time.
const PEAK_LAUNCH_CHAINED_OP: &str = "peak launches, chained";
const PEAK_LAUNCH_APART_OP: &str = "peak launches, apart";
const LAUNCH_OUTPUTS: usize = 8;

fn kind_name(kind: MatmulKind) -> &'static str {
    match kind {
        MatmulKind::Forward => "forward",
        MatmulKind::BackwardInput => "backward_input",
        MatmulKind::BackwardWeight => "backward_weight",
    }
}

fn format_name(format: QuantFormat) -> String {
    format!("{format:?}").to_lowercase()
}

fn parse_shape(s: &str) -> Result<(usize, usize, usize), String> {
    let dims: Vec<usize> = s.split('x').map(|d| d.trim().parse::<usize>()).collect::<Result<_, _>>().map_err(|e| format!("{s:?}: {e}"))?;
    match dims[..] {
        [m, n, k] if m > 0 && n > 0 && k > 0 => Ok((m, n, k)),
        _ => Err(format!("{s:?}: expected MxNxK, three sizes above 0 such as 512x576x1536")),
    }
}

/// The kernels of a profile with kernel times, slowest first, as a table; then the launches
/// that count FLOPs by grid, the slowest 25.
pub fn print_kernel_times(p: &Profile, per: f64) {
    let total: f64 = p.kernels.values().map(|k| k.ms).sum();
    let print = |title: &str, stats: BTreeMap<String, KernelStat>, most: usize| {
        let mut rows: Vec<(String, KernelStat)> = stats.into_iter().collect();
        rows.sort_by(|a, b| b.1.ms.total_cmp(&a.1.ms));
        println!("{title:<72} {:>9} {:>10} {:>6} {:>10}", "launches", "ms", "%", "GFLOP/s");
        for (name, k) in rows.into_iter().take(most) {
            let rate = if k.flops > 0.0 { format!("{:.1}", k.flops / k.ms / 1e6) } else { String::new() };
            println!("{:<72} {:>9.0} {:>10.1} {:>6.1} {:>10}", name, k.launches as f64 / per, k.ms / per, 100.0 * k.ms / total, rate);
        }
    };
    print(&format!("kernel ({})", p.kernel_times.map_or("not timed", |t| t.describe())), p.by_kernel(), usize::MAX);
    let grids = p.by_grid();
    if !grids.is_empty() {
        println!();
        print("the products by grid (workgroups), slowest first", grids, 25);
    }
}
