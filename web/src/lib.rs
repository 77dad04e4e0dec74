//! Hearth in the browser. For now one page that opens WebGPU through hearth-core, runs the
//! f32 matmul kernel on random data and compares it with the CPU reference.

use hearth_core::ops::cpu;
use hearth_core::ops::matmul::{matmul, Accumulate, MatmulDims, MatmulKind};
use hearth_core::rng::Rng;
use hearth_core::GpuContext;
use wasm_bindgen::prelude::*;

#[wasm_bindgen(start)]
pub fn start() {
    wasm_bindgen_futures::spawn_local(async {
        let message = match self_check().await {
            Ok(msg) => msg,
            Err(e) => format!(
                "Hearth could not use WebGPU here: {e}. Use a browser with WebGPU enabled: \
                 Chrome or Edge 113+, or Firefox/Safari with WebGPU turned on."
            ),
        };
        show(&message);
    });
}

/// Runs one matmul on the GPU and returns a line comparing it with the CPU reference.
async fn self_check() -> Result<String, String> {
    let ctx = GpuContext::new(None).await.map_err(|e| e.to_string())?;
    let (m, n, k) = (64, 48, 96);
    let mut rng = Rng::new(0);
    let x = rng.vec_uniform(m * k, -1.0, 1.0);
    let w = rng.vec_uniform(n * k, -1.0, 1.0);
    let err = |e: hearth_core::Error| e.to_string();
    let (xb, wb, yb) = (ctx.upload_f32(&x).map_err(err)?, ctx.upload_f32(&w).map_err(err)?, ctx.alloc_f32(m * n).map_err(err)?);
    matmul(&ctx, MatmulKind::Forward, &yb, &xb, &wb, MatmulDims::new(m, n, k), Accumulate::OVERWRITE).map_err(err)?;
    let got = ctx.read_f32(&yb).await.map_err(err)?;
    let mut want = vec![0.0; m * n];
    let to64 = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<f64>>();
    cpu::matmul_forward(&mut want, &to64(&x), &to64(&w), m, n, k);
    let max_diff = got.iter().zip(&want).map(|(&g, &w)| (g as f64 - w).abs()).fold(0.0, f64::max);
    let verdict = if max_diff < 1e-3 { "ok" } else { "MISMATCH" };
    Ok(format!(
        "WebGPU adapter: {}. matmul_forward {m}×{n}×{k} on the GPU vs the CPU reference: \
         largest difference {max_diff:.2e} ({verdict}).",
        ctx.summary()
    ))
}

fn show(message: &str) {
    web_sys::console::log_1(&message.into());
    let status = web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.get_element_by_id("status"));
    if let Some(el) = status {
        el.set_text_content(Some(message));
    }
}
