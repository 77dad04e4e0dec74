//! `hearth selftest`: prints the adapter and the kernel paths it gets, and checks kernels
//! against their CPU references.

use anyhow::{bail, Result};
use hearth_core::ops::attention::AttentionKernels;
use hearth_core::ops::cpu;
use hearth_core::ops::matmul::{choose_tiling, matmul_with, Accumulate, MatmulDims, MatmulKind, MatmulTiling};
use hearth_core::ops::matmul_quant::{matmul_quant, GpuQuantWeight, QuantBlock};
use hearth_core::GpuContext;
use hearth_core::quant::{QuantFormat, QuantTensor};
use hearth_core::rng::Rng;

fn to64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn largest_diff(got: &[f32], want: &[f64]) -> f64 {
    got.iter().zip(want).map(|(&g, &w)| (g as f64 - w).abs()).fold(0.0, f64::max)
}

/// Which kernels this adapter runs, as the launchers choose them.
fn print_paths(ctx: &GpuContext) {
    let small = MatmulDims::new(512, 576, 576);
    let large = MatmulDims::new(2048, 1536, 576);
    println!("kernel paths on this adapter: {:?}", ctx.kernel_paths());
    let row = MatmulDims::new(1, 576, 576);
    let thin = MatmulDims::new(2048, 16, 576);
    println!(
        "  f32 matmul           {:?} (512 × 576 outputs), {:?} (2048 × 1536), {:?} (2048 × 16: LoRA's rank side), {:?} (one row: decoding)",
        choose_tiling(ctx, MatmulKind::Forward, &small),
        choose_tiling(ctx, MatmulKind::Forward, &large),
        choose_tiling(ctx, MatmulKind::Forward, &thin),
        choose_tiling(ctx, MatmulKind::Forward, &row)
    );
    println!("  quantized matmul     {:?} blocks; Row kernel for one row of x (decoding)", QuantBlock::for_adapter(ctx));
    let attention = AttentionKernels::for_adapter(ctx);
    let fallback = if attention == AttentionKernels::Matmul { " (Rows for sequences whose scores exceed a chunk, or heads not a multiple of 4)" } else { "" };
    println!("  attention            {attention:?} kernels for training{fallback}");
    println!("  f16 weights          unpacked to f32 in the matmul (any adapter); f16 arithmetic not used (shader-f16 offered: {})", if ctx.has_f16() { "yes" } else { "no" });
    println!("  reductions           portable workgroup reductions (no subgroup or cooperative-matrix kernels yet)");
    println!("  GPU timestamps       {}", if ctx.has_gpu_timer() { "yes (bench reports GPU time)" } else { "no (bench reports host and wall time only)" });
}

pub fn run() -> Result<()> {
    let ctx = crate::open_gpu()?;
    print_paths(&ctx);
    let mut rng = Rng::new(0);
    let (m, n, k) = (70, 96, 128);
    let x = rng.vec_uniform(m * k, -1.0, 1.0);
    let w = rng.vec_uniform(n * k, -1.0, 1.0);
    let (xb, wb, yb) = (ctx.upload_f32(&x)?, ctx.upload_f32(&w)?, ctx.alloc_f32(m * n)?);
    let mut want = vec![0.0; m * n];
    cpu::matmul_forward(&mut want, &to64(&x), &to64(&w), m, n, k);
    let mut failed = 0;
    // Tolerance: f32 sums of 128 products of magnitude ≤ 1.
    let mut report = |name: String, diff: f64| {
        let ok = diff < 1e-3;
        failed += usize::from(!ok);
        println!("{:<44} largest difference {diff:.2e}  {}", name, if ok { "ok" } else { "FAILED" });
    };
    for tiling in MatmulTiling::ALL {
        matmul_with(&ctx, MatmulKind::Forward, tiling, &yb, &xb, &wb, MatmulDims::new(m, n, k), Accumulate::OVERWRITE)?;
        let got = pollster::block_on(ctx.read_f32(&yb))?;
        report(format!("matmul_forward ({tiling:?})"), largest_diff(&got, &want));
    }
    for format in QuantFormat::ALL {
        let t = QuantTensor::quantize(format, &w, n, k)?;
        let mut want = vec![0.0; m * n];
        cpu::matmul_forward(&mut want, &to64(&x), &to64(&t.dequantize()), m, n, k);
        let gw = GpuQuantWeight::upload(&ctx, &t)?;
        matmul_quant(&ctx, MatmulKind::Forward, &yb, &xb, &gw, m, Accumulate::OVERWRITE)?;
        let got = pollster::block_on(ctx.read_f32(&yb))?;
        report(format!("matmul_{format:?}_forward").to_lowercase(), largest_diff(&got, &want));
    }
    if failed > 0 {
        bail!("{failed} kernel checks failed on this adapter");
    }
    println!("all kernel checks passed");
    Ok(())
}
