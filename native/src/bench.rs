//! `hearth bench ...`: speed measurements printed as a table for the adapter they ran on.

use anyhow::Result;
use std::time::Instant;

use clap::Subcommand;
use hearth_core::ops::matmul::{choose_tiling, matmul, Accumulate, MatmulDims, MatmulKind};
use hearth_core::ops::matmul_quant::{matmul_quant, GpuQuantWeight};
use hearth_core::quant::{QuantFormat, QuantTensor};
use hearth_core::rng::Rng;
use hearth_core::{GpuBuffer, GpuContext};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Time the kernels (matmul f32 and quantized, attention, cross-entropy, ...).
    ///
    /// Example: hearth bench ops --quick
    Ops {
        /// Fewer repetitions and smaller shapes.
        #[arg(long)]
        quick: bool,
        /// Only rows whose kernel name contains this.
        #[arg(long)]
        filter: Option<String>,
    },
    /// Prefill and decode tokens/s of a model (HF folder or .gguf).
    ///
    /// Example: hearth bench generate SmolLM2-135M-Instruct.Q4_1.gguf --prompt-tokens 128 --new-tokens 64
    Generate(crate::bench_generate::BenchGenerateArgs),
    /// Training tokens/s and peak GPU memory on synthetic examples.
    ///
    /// Example: hearth bench train SmolLM2-135M-Instruct.Q4_1.gguf --seq-len 128 --batch-size 4
    Train(crate::bench_train::BenchTrainArgs),
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Ops { quick, filter } => ops(quick, filter.as_deref()),
        BenchCommand::Generate(a) => crate::bench_generate::run(a),
        BenchCommand::Train(a) => crate::bench_train::run(a),
    }
}

struct Row {
    kernel: String,
    shape: String,
    ms: f64,
    /// (amount, unit) per second: GFLOP/s or GB/s.
    rate: (f64, &'static str),
}

/// Runs `launch` once to warm up (pipeline compile), then `BATCHES` batches of `reps` runs;
/// returns ms per run of the fastest batch. On a shared machine the slower batches measure
/// the neighbours, not the kernel.
fn time(ctx: &GpuContext, reps: usize, mut launch: impl FnMut()) -> Result<f64> {
    const BATCHES: usize = 5;
    launch();
    pollster::block_on(ctx.finish())?;
    let mut best = f64::INFINITY;
    for _ in 0..BATCHES {
        let start = Instant::now();
        for _ in 0..reps {
            launch();
        }
        pollster::block_on(ctx.finish())?;
        best = best.min(start.elapsed().as_secs_f64() * 1e3 / reps as f64);
    }
    Ok(best)
}

fn random(ctx: &GpuContext, rng: &mut Rng, n: usize) -> Result<GpuBuffer> {
    Ok(ctx.upload_f32(&rng.vec_uniform(n, -1.0, 1.0))?)
}

fn ops(quick: bool, filter: Option<&str>) -> Result<()> {
    let ctx = crate::open_gpu()?;
    let mut rng = Rng::new(0);
    let reps = if quick { 2 } else { 5 };
    let mut rows: Vec<Row> = Vec::new();
    let wanted = |name: &str| filter.is_none_or(|f| name.contains(f));

    let sizes: &[(usize, usize, usize)] =
        if quick { &[(256, 256, 256)] } else { &[(1024, 1024, 1024), (1000, 1000, 1000), (512, 576, 1536)] };
    for &(m, n, k) in sizes {
        for kind in [MatmulKind::Forward, MatmulKind::BackwardInput, MatmulKind::BackwardWeight] {
            let d = MatmulDims::new(m, n, k);
            let name = format!("matmul_{kind:?} ({:?})", choose_tiling(&ctx, kind, &d)).to_lowercase();
            if !wanted(&name) {
                continue;
            }
            let (a_len, b_len, c_len) = match kind {
                MatmulKind::Forward => (m * k, n * k, m * n),
                MatmulKind::BackwardInput => (m * n, n * k, m * k),
                MatmulKind::BackwardWeight => (m * n, m * k, n * k),
            };
            let (a, b, c) = (random(&ctx, &mut rng, a_len)?, random(&ctx, &mut rng, b_len)?, random(&ctx, &mut rng, c_len)?);
            let ms = time(&ctx, reps, || {
                matmul(&ctx, kind, &c, &a, &b, d, Accumulate::OVERWRITE).expect("matmul launch");
            })?;
            rows.push(Row {
                kernel: name,
                shape: format!("M{m} N{n} K{k}"),
                ms,
                rate: (2.0 * (m * n * k) as f64 / ms / 1e6, "GFLOP/s"),
            });
        }
    }
    // Quantized forward at 512 rows of x, beside the f32 matmul of the same shape above.
    let (m, n, k) = if quick { (128, 256, 256) } else { (512, 576, 1536) };
    for format in QuantFormat::ALL {
        let name = format!("matmul_{format:?}_forward").to_lowercase();
        if !wanted(&name) {
            continue;
        }
        let w = rng.vec_uniform(n * k, -1.0, 1.0);
        let t = QuantTensor::quantize(format, &w, n, k)?;
        let gw = GpuQuantWeight::upload(&ctx, &t)?;
        let (x, y) = (random(&ctx, &mut rng, m * k)?, random(&ctx, &mut rng, m * n)?);
        let ms = time(&ctx, reps, || {
            matmul_quant(&ctx, MatmulKind::Forward, &y, &x, &gw, m, Accumulate::OVERWRITE).expect("launch");
        })?;
        rows.push(Row { kernel: name, shape: format!("M{m} N{n} K{k}"), ms, rate: (2.0 * (m * n * k) as f64 / ms / 1e6, "GFLOP/s") });
    }
    // One row of x (decoding a token): bound by reading the weight, so the rate is its bytes/s.
    let (n, k) = if quick { (256, 256) } else { (1536, 576) };
    for format in QuantFormat::ALL {
        let name = format!("matmul_{format:?}_forward_row").to_lowercase();
        if !wanted(&name) {
            continue;
        }
        let t = QuantTensor::quantize(format, &rng.vec_uniform(n * k, -1.0, 1.0), n, k)?;
        let gw = GpuQuantWeight::upload(&ctx, &t)?;
        let (x, y) = (random(&ctx, &mut rng, k)?, random(&ctx, &mut rng, n)?);
        let ms = time(&ctx, reps * 10, || {
            matmul_quant(&ctx, MatmulKind::Forward, &y, &x, &gw, 1, Accumulate::OVERWRITE).expect("launch");
        })?;
        rows.push(Row { kernel: name, shape: format!("M1 N{n} K{k}"), ms, rate: (gw.bytes() as f64 / ms / 1e6, "GB/s") });
    }
    print_table(&ctx, &rows);
    Ok(())
}

fn print_table(ctx: &GpuContext, rows: &[Row]) {
    println!("adapter: {}", ctx.summary());
    println!("{:<40} {:<22} {:>10} {:>16}", "kernel", "shape", "ms", "rate");
    for r in rows {
        println!("{:<40} {:<22} {:>10.3} {:>9.1} {}", r.kernel, r.shape, r.ms, r.rate.0, r.rate.1);
    }
}
