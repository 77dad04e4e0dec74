//! Tiny random-weight models of every family (tests/fixtures/tiny-*, made by
//! tests/reference/tiny_models.py) against transformers' logits, greedy continuation (ids and
//! text) and tokenizer: GQA (4 heads on 2 KV heads), untied and tied embeddings, q/k/v biases,
//! sharded f16 and bf16 safetensors, Llama 3 rope scaling, head sizes other than hidden /
//! heads, a SentencePiece-style tokenizer with byte fallback (Mistral), per-head q/k norms
//! (Qwen3, Gemma 3), NoPE layers (SmolLM3), Gemma 3's windows, post-norms and GeGLU, Phi-3's
//! fused layers, partial rotary and LongRoPE; and their GGUF files as llama.cpp writes them.
//!
//! Tolerance: |logit − transformers| ≤ 2e-4 + 1e-4·|logit| (f32 kernels against PyTorch's
//! f32 CPU; measured differences are ~1e-6). With `--quant q8_0` the bound is looser
//! (3e-3 + 3e-2·|x|, logits here are ~0.05; measured 7e-4): 8-bit weights against the f32 reference.

use hearth_core::io::load::{load_hf_folder, LoadedModel};
use hearth_core::model::forward::KvCache;
use hearth_core::model::{Model, ModelOptions, WeightFormat};
use hearth_core::ops::matmul::GEMV_ROWS;
use hearth_core::GpuContext;
use hearth_tests::{assert_close, fixture, with_gpu, DirFiles};
use serde_json::Value;

fn check(name: &str, quant: Option<WeightFormat>, max_binding: Option<u64>, atol: f64, rtol: f64) {
    let m = load_hf_folder(&DirFiles(fixture(name)), quant).unwrap();
    check_loaded(name, name, m, max_binding, atol, rtol);
}

/// `m` (loaded from `what`) against the ids, decoded text and logits of fixture `name`'s
/// reference.json.
fn check_loaded(what: &str, name: &str, m: LoadedModel, max_binding: Option<u64>, atol: f64, rtol: f64) {
    // chunk 8: the 13+ tokens run through the KV cache in several chunks
    with_gpu!(ctx => { check_on(ctx, what, name, m, 8, max_binding, atol, rtol) });
}

#[allow(clippy::too_many_arguments)]
fn check_on(ctx: &GpuContext, what: &str, name: &str, m: LoadedModel, chunk: usize, max_binding: Option<u64>, atol: f64, rtol: f64) {
    let r: Value = serde_json::from_str(&std::fs::read_to_string(fixture(name).join("reference.json")).unwrap()).unwrap();
    let ids: Vec<u32> = r["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
    assert_eq!(m.tokenizer.encode(r["text"].as_str().unwrap(), true).unwrap(), ids, "{what}: token ids");
    assert_eq!(m.tokenizer.decode(&ids, true).unwrap(), r["decoded"].as_str().unwrap(), "{what}: decoded text");
    let want: Vec<f64> = r["logits"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    let opts = ModelOptions { chunk, max_seq: 64, max_binding };
    let tok = m.tokenizer;
    let mut model = Model::new(ctx, &m.cfg, m.weights, opts).unwrap();
    if max_binding.is_some() {
        assert!(model.lm_head_parts() > 1, "{what}: the lm_head should have been split");
    }
    let got = pollster::block_on(model.logits(ctx, &ids)).unwrap();
    assert_close(&format!("{what} logits"), &got, &want, atol, rtol);
    // transformers' greedy continuation, through the KV cache one token at a time (past
    // Gemma's and Phi-3's windows)
    if let Some(greedy) = r["greedy"].as_array().filter(|_| atol < 1e-3) {
        use hearth_core::model::generate::{generate, GenerateParams};
        let params = GenerateParams { max_new_tokens: 12, ..Default::default() };
        let g = pollster::block_on(generate(ctx, &mut model, &tok, &ids, &params, |_| {})).unwrap();
        let want: Vec<u32> = greedy.iter().map(|x| x.as_u64().unwrap() as u32).collect();
        assert_eq!(g.ids, want, "{what}: greedy ids");
        assert_eq!(g.text, r["greedy_text"].as_str().unwrap(), "{what}: greedy text");
    }
}

/// The kernels GPUs get, run on this adapter through the KV cache a few tokens at a time, so
/// that every matmul is a matrix-vector product (decoding's path) and attention reads the
/// cache: gate, up and the activation in one launch (silu; gelu for Gemma 3), and one token's
/// q, k and v as one matmul; chunks of several tokens over the cache in the flash attention
/// (Gemma 3's heads of 256: the tiled one).
#[test]
fn tiny_models_with_the_gpu_kernels_a_few_tokens_at_a_time() {
    // a context of its own, so that its launches are counted alone
    let Some(own) = hearth_tests::own_gpu() else { return };
    let ctx = &own.with_kernel_paths(hearth_core::gpu::KernelPaths::Gpu);
    // f32 weights: the f32 matrix-vector kernels (the files' f16 would take the quantized ones)
    for (name, chunk) in [("tiny-llama", 3), ("tiny-gemma3", 1)] {
        let m = load_hf_folder(&DirFiles(fixture(name)), Some(WeightFormat::F32)).unwrap();
        ctx.profile_begin();
        check_on(ctx, &format!("{name} (GPU kernels, chunks of {chunk})"), name, m, chunk, None, 2e-4, 1e-4);
        let kernels = hearth_tests::profiled_kernels(ctx);
        for kernel in ["matmul_gemv", "matmul_gemv_gated"] {
            assert!(kernels.keys().any(|k| k.contains(&format!(":{kernel} ["))), "{name}: {kernel} in {kernels:?}");
        }
        // chunks of several tokens attend over the cache in the flash kernel's tiles of scores
        let flash = kernels.keys().any(|k| k.contains(":attention_flash_forward ["));
        assert_eq!(flash, chunk > 1, "{name}: {kernels:?}");
        // the norm before gate and up inside their launch (not Gemma's: a post-norm comes
        // between o and the stream)
        let normed = kernels.keys().any(|k| k.starts_with("matmul_tiled_normed:matmul_gemv_gated"));
        assert_eq!(normed, name == "tiny-llama", "{name}: {kernels:?}");
    }
    // Q8_0 weights a few tokens at a time (chunks of 3): q, k and v in one normed launch that
    // writes each part apart, then each part's bias (Qwen2's)
    let m = load_hf_folder(&DirFiles(fixture("tiny-qwen2")), Some(WeightFormat::parse("q8_0").unwrap())).unwrap();
    ctx.profile_begin();
    check_on(ctx, "tiny-qwen2 q8_0 (GPU kernels, chunks of 3)", "tiny-qwen2", m, 3, None, 3e-3, 3e-2);
    let kernels = hearth_tests::profiled_kernels(ctx);
    assert!(kernels.keys().any(|k| k.starts_with("matmul_q8_0_normed:matmul_quant_gemv [")), "{kernels:?}");
    // Q8_0 weights one token at a time: q, k and v with Qwen2's biases as one quantized
    // matmul and one bias launch per layer and token (three apart), attention as one with
    // rope inside it, gate and up as one, each matmul with the norm before it, so that the
    // only norm launch is the final one
    let m = load_hf_folder(&DirFiles(fixture("tiny-qwen2")), Some(WeightFormat::parse("q8_0").unwrap())).unwrap();
    let (layers, tokens) = (m.cfg.n_layers as u64, 27);
    ctx.profile_begin();
    check_on(ctx, "tiny-qwen2 q8_0 (GPU kernels, one token at a time)", "tiny-qwen2", m, 1, None, 3e-3, 3e-2);
    let kernels = hearth_tests::profiled_kernels(ctx);
    let launches = |name: &str| kernels.iter().filter(|(k, _)| k.contains(&format!(":{name} ["))).map(|(_, s)| s.launches).sum::<u64>();
    assert_eq!(launches("bias_forward"), layers * tokens, "{kernels:?}");
    assert_eq!(launches("matmul_quant_gemv_gated"), layers * tokens, "{kernels:?}");
    // attention in one launch, rope inside it
    assert_eq!(launches("attention_decode"), layers * tokens, "{kernels:?}");
    let launches_of = |shader: &str| kernels.iter().filter(|(k, _)| k.starts_with(shader)).map(|(_, s)| s.launches).sum::<u64>();
    assert_eq!(launches_of("rope"), 0, "{kernels:?}");
    assert_eq!(launches_of("matmul_q8_0_normed:"), 2 * layers * tokens, "{kernels:?}");
    assert_eq!(launches_of("rmsnorm"), tokens, "{kernels:?}");
}

/// Prompts in chunks of more than a few tokens on the GPU kernels: q, k and v as one tiled
/// launch through the layer's stacked weight, each written where the block reads it (column
/// blocks of one buffer), gate and up likewise, with Qwen2's biases on the parts, through
/// Qwen3's head norms and SmolLM3's layers without rope: transformers' logits, in 4 quantized
/// launches per layer and chunk where there were 7.
#[test]
fn chunks_project_each_input_once_with_the_gpu_kernels() {
    // a context of its own, so that its launches are counted alone
    let Some(own) = hearth_tests::own_gpu() else { return };
    let ctx = &own.with_kernel_paths(hearth_core::gpu::KernelPaths::Gpu);
    for name in ["tiny-llama", "tiny-qwen3", "tiny-smollm3"] {
        let m = load_hf_folder(&DirFiles(fixture(name)), Some(WeightFormat::F32)).unwrap();
        check_on(ctx, &format!("{name} (GPU kernels, chunks of 20)"), name, m, 20, None, 2e-4, 1e-4);
    }
    let m = load_hf_folder(&DirFiles(fixture("tiny-qwen2")), Some(WeightFormat::parse("q8_0").unwrap())).unwrap();
    let layers = m.cfg.n_layers as u64;
    ctx.profile_begin();
    check_on(ctx, "tiny-qwen2 q8_0 (GPU kernels, chunks of 20)", "tiny-qwen2", m, 20, None, 3e-3, 3e-2);
    let kernels = pollster::block_on(ctx.profile_end()).unwrap().kernels;
    let launches = |name: &str| kernels.iter().filter(|(k, _)| k.contains(&format!(":{name} ["))).map(|(_, s)| s.launches).sum::<u64>();
    // the chunks of more than 16 tokens (fewer take the matrix-vector kernels: here the last
    // 7, over the cache): q/k/v, o, gate/up and down each
    let r: Value = serde_json::from_str(&std::fs::read_to_string(fixture("tiny-qwen2").join("reference.json")).unwrap()).unwrap();
    let tokens = r["ids"].as_array().unwrap().len();
    let tiled_chunks = (0..tokens).step_by(20).filter(|&start| tokens - start > GEMV_ROWS).count() as u64;
    assert!(tiled_chunks >= 1 && tokens % 20 > 4, "{tokens} tokens");
    assert_eq!(launches("matmul_quant_forward_tiled"), 4 * layers * tiled_chunks, "{kernels:?}");
    assert!(launches("matmul_quant_gemv") > 0, "{kernels:?}");
}

/// Decoding with an adapter on all seven targets, and with PEFT's default q_proj, v_proj: the
/// GPU kernels give the logits of lavapipe's kernels (each target's products launched apart),
/// over a prompt and six decoded tokens. On the GPU kernels the prompt's x·Aᵀ of q, k and v
/// is one launch, as is gate's and up's, and so are their base products with their LoRA terms
/// (k's block without one where only q and v are adapted); a decoded token's q, k and v are
/// one launch with their three LoRA terms, gate, up and the activation another, after one x·Aᵀ
/// launch each, all of them norming the stream as they read it.
#[test]
fn an_adapter_decodes_alike_on_both_kernel_paths() {
    use hearth_core::lora::{Adapter, LoraConfig, Target};
    let (Some(plain), Some(own)) = (hearth_tests::gpu(), hearth_tests::own_gpu()) else { return };
    // a context of its own, so that its launches are counted alone
    let tiled = &own.with_kernel_paths(hearth_core::gpu::KernelPaths::Gpu);
    // (a prompt of more tokens than the matrix-vector kernels take, in one chunk)
    let prompt: Vec<u32> = (0..20).map(|i| (i * 37 + 3) % 250).collect();
    let steps = [7u32, 100, 250, 12, 44, 1];
    type Launches = std::collections::BTreeMap<String, u64>;
    let profiled = |ctx: &GpuContext, run: &mut dyn FnMut()| -> Launches {
        ctx.profile_begin();
        run();
        hearth_tests::profiled_kernels(ctx).into_iter().map(|(k, s)| (k, s.launches)).collect()
    };
    let run = |ctx: &GpuContext, targets: &[Target]| -> (Vec<Vec<f32>>, Launches, Launches, u64) {
        let m = load_hf_folder(&DirFiles(fixture("tiny-llama")), Some(WeightFormat::F32)).unwrap();
        let layers = m.cfg.n_layers as u64;
        let mut model = Model::new(ctx, &m.cfg, m.weights, ModelOptions { chunk: 24, max_seq: 64, max_binding: None }).unwrap();
        let mut a = Adapter::init(&m.cfg, &LoraConfig { r: 4, alpha: 8.0, targets: targets.to_vec(), ..Default::default() }, 7).unwrap();
        for t in &mut a.tensors {
            t.b.iter_mut().enumerate().for_each(|(i, x)| *x = ((i % 7) as f32 - 3.0) * 0.05);
        }
        model.set_adapter(ctx, Some(a), "a nonzero adapter").unwrap();
        let mut rows = Vec::new();
        let prefill = profiled(ctx, &mut || rows.push(pollster::block_on(model.forward(ctx, &prompt)).unwrap()));
        let decode = profiled(ctx, &mut || {
            for &t in &steps {
                rows.push(pollster::block_on(model.forward(ctx, &[t])).unwrap());
            }
        });
        (rows, prefill, decode, layers)
    };
    let alike = |targets: &[Target]| -> (Launches, Launches, u64) {
        let (want, ..) = run(plain, targets);
        let (got, prefill, decode, layers) = run(tiled, targets);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let w: Vec<f64> = w.iter().map(|&x| x as f64).collect();
            assert_close(&format!("tiny-llama with an adapter on {targets:?}, row {i} (0: the prompt)"), g, &w, 1e-5, 1e-5);
        }
        (prefill, decode, layers)
    };
    let count = |l: &Launches, key: &str| l.get(key).copied().unwrap_or(0);
    // q and v: their x·Aᵀ in one launch per layer (in tiles of 64 × 32: the rank wide), q/k/v
    // in one with the term of q's and v's blocks, o, gate/up and down without
    let (prefill, decode, layers) = alike(&[Target::Q, Target::V]);
    assert_eq!(count(&prefill, "matmul_tiled:matmul_tiled [64x32]"), layers, "{prefill:#?}");
    assert_eq!(count(&prefill, "matmul_tiled:matmul_tiled [64x64]"), 3 * layers, "{prefill:#?}");
    assert_eq!(count(&prefill, "matmul_tiled_low_rank:matmul_tiled [64x64]"), layers, "{prefill:#?}");
    // a decoded token's: their x·Aᵀ and q/k/v with the term, each norming the stream; o and
    // down plain
    let per_token = layers * steps.len() as u64;
    assert_eq!(count(&decode, "matmul_tiled_normed:matmul_gemv [default]"), 2 * per_token, "{decode:#?}");
    assert_eq!(count(&decode, "matmul_tiled:matmul_gemv [default]"), 2 * per_token, "{decode:#?}");
    assert!(!decode.keys().any(|k| k.contains("low_rank")), "{decode:#?}");
    let (prefill, decode, layers) = alike(&Target::ALL);
    // the prompt: x·Aᵀ in 4 launches per layer (q/k/v's, o's, gate/up's, down's), not 7, and
    // the base products with their terms in 4 (q/k/v and gate/up through their stacked
    // weights, the LoRA of each part its block's)
    assert_eq!(count(&prefill, "matmul_tiled:matmul_tiled [64x32]"), 4 * layers, "{prefill:#?}");
    assert_eq!(count(&prefill, "matmul_tiled:matmul_tiled [64x64]"), 0, "{prefill:#?}");
    assert_eq!(count(&prefill, "matmul_tiled_low_rank:matmul_tiled [64x64]"), 4 * layers, "{prefill:#?}");
    // a decoded token: per layer x·Aᵀ of o and of down (2), o and down with their terms (2),
    // q/k/v's and gate/up's x·Aᵀ and q/k/v itself norming the stream (3), the gated launch
    // norming it (1); the only norm launch the final one
    assert_eq!(count(&decode, "matmul_tiled:matmul_gemv [default]"), 2 * per_token, "{decode:#?}");
    assert_eq!(count(&decode, "matmul_tiled_low_rank:matmul_gemv [default]"), 2 * per_token, "{decode:#?}");
    assert_eq!(count(&decode, "matmul_tiled_normed:matmul_gemv [default]"), 3 * per_token, "{decode:#?}");
    assert_eq!(count(&decode, "matmul_tiled_normed:matmul_gemv_gated [silu]"), per_token, "{decode:#?}");
    assert_eq!(decode.iter().filter(|(k, _)| k.starts_with("rmsnorm")).map(|(_, n)| n).sum::<u64>(), steps.len() as u64, "{decode:#?}");
    assert!(!decode.keys().any(|k| k.starts_with("swiglu")), "{decode:#?}");
}

/// `fixture` loaded as `format`, with the GPU kernels and forwards in f16 tiles, against
/// transformers within `atol` + `rtol`·|x|; the kernel named `kernel...` must have run.
/// Skipped where the adapter has no shader-f16.
fn check_f16_tiles(what: &str, fixture_name: &str, format: WeightFormat, atol: f64, rtol: f64, kernel: &str) {
    let Some(ctx) = hearth_tests::own_gpu_f16_matmuls() else { return };
    let m = load_hf_folder(&DirFiles(fixture(fixture_name)), Some(format)).unwrap();
    ctx.profile_begin();
    check_on(&ctx, what, fixture_name, m, 20, None, atol, rtol);
    let kernels = pollster::block_on(ctx.profile_end()).unwrap().kernels;
    assert!(kernels.keys().any(|k| k.starts_with(kernel)), "{kernels:?}");
}

/// Forwards in f16 tiles (HEARTH_F16_MATMUL=1 on an adapter with shader-f16 but no
/// cooperative matrices; here lavapipe with the GPU kernels): the matmuls' inputs rounded to
/// f16 (11 significant bits), so the logits get a looser bound than f32's: 2e-4 + 1e-3·|x|
/// (logits here are ~0.05; measured 2.6e-5), and the greedy continuation is transformers'.
#[test]
fn tiny_llama_with_f16_tiles_stays_close() {
    check_f16_tiles("tiny-llama (f16 tiles)", "tiny-llama", WeightFormat::F32, 2e-4, 1e-3, "matmul_tiled_f16");
}

/// The same with Q8_0 weights, quantized on load: the quantized tiled kernels' forwards in
/// f16 tiles, within quantized_on_load_stays_close's bound.
#[test]
fn quantized_with_f16_tiles_stays_close() {
    check_f16_tiles("tiny-qwen2 (q8_0, f16 tiles)", "tiny-qwen2", WeightFormat::parse("q8_0").unwrap(), 3e-3, 3e-2, "matmul_q8_0_f16_tiles");
}

#[test]
fn tiny_llama_matches_transformers() {
    check("tiny-llama", None, None, 2e-4, 1e-4);
}

#[test]
fn tiny_qwen2_with_qkv_bias_matches_transformers() {
    check("tiny-qwen2", None, None, 2e-4, 1e-4);
}

#[test]
fn tiny_llama3_rope_scaling_matches_transformers() {
    check("tiny-llama3", None, None, 2e-4, 1e-4);
}

/// Gemma 3 with every feature on: windows of 4 tokens on layers 0 and 2 (the 27-token text
/// runs past them, through the KV cache in chunks of 8), their own rope theta, GeGLU, four
/// norms of (1 + w) per layer, q/k norms, scaled embeddings, query_pre_attn_scalar.
#[test]
fn tiny_gemma3_with_sliding_windows_matches_transformers() {
    let m = load_hf_folder(&DirFiles(fixture("tiny-gemma3")), None).unwrap();
    let local = m.cfg.local_attention.clone().unwrap();
    assert_eq!((local.window, local.layers, local.rope_theta), (4, vec![0, 2], Some(10000.0)));
    assert_eq!((m.cfg.rope_theta, m.cfg.attn_scale), (1_000_000.0, 1.0 / 24f32.sqrt()));
    check("tiny-gemma3", None, None, 2e-4, 1e-4);
}

/// Phi-3.5 / Phi-4-mini's features: fused qkv_proj and gate_up_proj (split on load), rope on
/// 12 of 16 dims with LongRoPE's short factors and attention factor, a window of 8 tokens on
/// every layer.
#[test]
fn tiny_phi3_with_partial_longrope_matches_transformers() {
    let m = load_hf_folder(&DirFiles(fixture("tiny-phi3")), None).unwrap();
    assert_eq!((m.cfg.rotary_dims, m.cfg.local_attention.as_ref().map(|l| l.window)), (12, Some(8)));
    let mscale = m.cfg.longrope.as_ref().unwrap().factors.mscale;
    assert!((mscale - (1.0 + 4f32.ln() / 64f32.ln()).sqrt()).abs() < 1e-6, "{mscale}");
    check("tiny-phi3", None, None, 2e-4, 1e-4);
}

/// Llama 3.2 1B and 3B's shape: Llama 3 rope scaling with tied embeddings.
#[test]
fn tiny_llama32_tied_with_rope_scaling_matches_transformers() {
    let m = load_hf_folder(&DirFiles(fixture("tiny-llama32")), None).unwrap();
    assert!(m.cfg.tie_embeddings && m.cfg.rope_scaling.factor == 8.0, "{:?}", m.cfg);
    check("tiny-llama32", None, None, 2e-4, 1e-4);
}

#[test]
fn tiny_mistral_with_wide_heads_matches_transformers() {
    check("tiny-mistral", None, None, 2e-4, 1e-4);
}

#[test]
fn lm_head_split_across_bindings_gives_the_same_logits() {
    // 300 × 64 × 4 bytes = 76800: a 20000-byte binding splits it into 4 parts
    check("tiny-llama", None, Some(20000), 2e-4, 1e-4);
}

#[test]
fn quantized_on_load_stays_close() {
    check("tiny-qwen2", Some(WeightFormat::parse("q8_0").unwrap()), None, 3e-3, 3e-2);
}

#[test]
fn a_context_past_the_sliding_window_is_refused() {
    // Mistral's window: Hearth attends to the whole context, so it refuses to go past it.
    let text = std::fs::read_to_string(fixture("tiny-mistral").join("config.json")).unwrap();
    let with_window = text.replace("\"sliding_window\": null", "\"sliding_window\": 8");
    let cfg = hearth_core::model::Config::from_hf_json(&with_window, "config.json").unwrap();
    assert_eq!(cfg.sliding_window, Some(8));
    let qwen = std::fs::read_to_string(fixture("tiny-qwen2").join("config.json")).unwrap().replace("\"sliding_window\": null", "\"sliding_window\": 8");
    assert_eq!(hearth_core::model::Config::from_hf_json(&qwen, "config.json").unwrap().sliding_window, None, "Qwen2's window is off");
    with_gpu!(ctx => {
        let m = load_hf_folder(&DirFiles(fixture("tiny-mistral")), None).unwrap();
        let mut model = Model::new(ctx, &cfg, m.weights, ModelOptions { chunk: 8, max_seq: 64, max_binding: None }).unwrap();
        let ids: Vec<u32> = (1..20).collect();
        let err = pollster::block_on(model.logits(ctx, &ids)).unwrap_err().to_string();
        assert!(err.contains("sliding attention window of 8"), "{err}");
        assert!(pollster::block_on(model.logits(ctx, &ids[..8])).is_ok(), "8 tokens fit the window");
    });
}

#[test]
fn tiny_llama3_gguf_with_rope_freqs_matches_transformers() {
    // tiny-llama3 as llama.cpp writes Llama 3.1+: permuted q/k rows and the rope scaling as
    // rope_freqs.weight (tests/reference/tiny_gguf.py); the logits are the HF folder's.
    let bytes = std::fs::read(fixture("tiny-llama3.gguf")).unwrap();
    let m = hearth_core::io::load::load_gguf(&bytes, "tiny-llama3.gguf", None).unwrap();
    let hf = load_hf_folder(&DirFiles(fixture("tiny-llama3")), None).unwrap();
    assert_eq!(m.cfg.rope_scaling, hf.cfg.rope_scaling, "the scaling recovered from rope_freqs.weight");
    check_loaded("tiny-llama3.gguf", "tiny-llama3", m, None, 2e-4, 1e-4);
}

/// Qwen3 and SmolLM3 as llama.cpp's converter writes them (tests/reference/tiny_gguf.py):
/// the head norms under attn_q_norm/attn_k_norm, Qwen3's q/k unpermuted and its lm_head tied,
/// SmolLM3's q/k permuted and its NoPE layers (no metadata key) every 4th; the logits are
/// the HF folders'.
#[test]
fn tiny_qwen3_and_smollm3_ggufs_match_transformers() {
    for name in ["tiny-qwen3", "tiny-smollm3"] {
        let file = format!("{name}.gguf");
        let m = hearth_core::io::load::load_gguf(&std::fs::read(fixture(&file)).unwrap(), &file, None).unwrap();
        let hf = load_hf_folder(&DirFiles(fixture(name)), None).unwrap();
        assert_eq!((m.cfg.arch, m.cfg.qk_norm, &m.cfg.nope_layers, m.cfg.tie_embeddings), (hf.cfg.arch, hf.cfg.qk_norm, &hf.cfg.nope_layers, hf.cfg.tie_embeddings), "{file}");
        check_loaded(&file, name, m, None, 2e-4, 1e-4);
    }
}

/// Gemma 3 as llama.cpp's converter writes it: norms stored as 1 + w, post_attention_norm,
/// ffn_norm (the pre-feedforward norm) and post_ffw_norm; llama.cpp's constants for the layer
/// pattern (every 6th global) and the local rope theta. The logits are the HF folder's.
#[test]
fn tiny_gemma3_gguf_matches_transformers() {
    let file = "tiny-gemma3-p6.gguf";
    let m = hearth_core::io::load::load_gguf(&std::fs::read(fixture(file)).unwrap(), file, None).unwrap();
    let hf = load_hf_folder(&DirFiles(fixture("tiny-gemma3-p6")), None).unwrap();
    assert_eq!(m.cfg.local_attention, hf.cfg.local_attention, "{file}");
    assert_eq!((m.cfg.attn_scale, m.cfg.embed_scale, m.cfg.activation), (hf.cfg.attn_scale, hf.cfg.embed_scale, hf.cfg.activation));
    check_loaded(file, "tiny-gemma3-p6", m, None, 2e-4, 1e-4);
    check("tiny-gemma3-p6", None, None, 2e-4, 1e-4);
}

/// Phi-3 as llama.cpp's converter writes it: attn_qkv and ffn_up (gate and up) fused, the
/// rotary dims in the metadata, LongRoPE as rope_factors_short.weight with its attention
/// factor and original context; the logits are the HF folder's.
#[test]
fn tiny_phi3_gguf_matches_transformers() {
    let file = "tiny-phi3.gguf";
    let m = hearth_core::io::load::load_gguf(&std::fs::read(fixture(file)).unwrap(), file, None).unwrap();
    let hf = load_hf_folder(&DirFiles(fixture("tiny-phi3")), None).unwrap();
    assert_eq!((m.cfg.rotary_dims, &m.cfg.local_attention, m.cfg.fused), (hf.cfg.rotary_dims, &hf.cfg.local_attention, true));
    let (a, b) = (m.cfg.longrope.as_ref().unwrap(), hf.cfg.longrope.as_ref().unwrap());
    assert_eq!((a.factors.divisors, a.original_max_position), (b.factors.divisors, b.original_max_position));
    assert!((a.factors.mscale - b.factors.mscale).abs() < 1e-6);
    check_loaded(file, "tiny-phi3", m, None, 2e-4, 1e-4);
}

#[test]
fn rope_freqs_that_are_not_llama3_scaling_are_refused() {
    let mut bytes = std::fs::read(fixture("tiny-llama3.gguf")).unwrap();
    let start = hearth_core::io::gguf::Gguf::parse(&bytes, "m.gguf").unwrap().tensor("rope_freqs.weight").unwrap().start;
    bytes[start..start + 4].copy_from_slice(&0.5f32.to_le_bytes());
    let g = hearth_core::io::gguf::Gguf::parse(&bytes, "m.gguf").unwrap();
    let err = hearth_core::model::Config::from_gguf(&g, "m.gguf").unwrap_err().to_string();
    assert!(err.contains("m.gguf") && err.contains("rope_freqs.weight is not Llama 3's rope scaling"), "{err}");
}

#[test]
fn reusing_the_cache_generates_what_a_fresh_start_does() {
    // A chat's second turn with reuse_cache runs only the new tokens; the answer must be the
    // one generated from an empty cache (greedy, then sampled with a seed).
    use hearth_core::model::generate::{generate, GenerateParams};
    with_gpu!(ctx => {
        let m = load_hf_folder(&DirFiles(fixture("tiny-llama")), None).unwrap();
        let tok = m.tokenizer;
        let mut model = Model::new(ctx, &m.cfg, m.weights, ModelOptions { chunk: 8, max_seq: 128, max_binding: None }).unwrap();
        for temperature in [0.0, 0.9] {
            let mut params = GenerateParams { max_new_tokens: 6, ..Default::default() };
            params.sampling.temperature = temperature;
            params.sampling.seed = 3;
            let first = tok.encode("Hello world, tiny", true).unwrap();
            let g = pollster::block_on(generate(ctx, &mut model, &tok, &first, &params, |_| {})).unwrap();
            let second: Vec<u32> = first.iter().chain(&g.ids).copied().chain(tok.encode(" models are fun", false).unwrap()).collect();
            let reused = GenerateParams { reuse_cache: true, ..params.clone() };
            let cached = model.cached_prefix(&second);
            assert!(cached >= first.len(), "the cache should hold the first turn ({cached} of {} tokens)", first.len());
            let again = pollster::block_on(generate(ctx, &mut model, &tok, &second, &reused, |_| {})).unwrap();
            let fresh = pollster::block_on(generate(ctx, &mut model, &tok, &second, &params, |_| {})).unwrap();
            assert_eq!(again.ids, fresh.ids, "temperature {temperature}: reused cache vs fresh start");
        }
    });
}

/// Generation picks each token on the GPU and runs it before the host reads it
/// (model/gpu_picks.rs); it must generate what reading the logits and picking on the host does
/// (the loop `hearth serve` runs), token for token and piece for piece, and leave the cache
/// as it does, wherever it stops: at max_new_tokens (0, 1 and 8), at a stop string, at EOS,
/// when the caller cancels, and with no room left in the cache (the same error); with an
/// adapter on every linear layer; greedy and sampled (the same seeded draws), with a repetition
/// penalty. The tokens it ran ahead are dropped. Both kernel paths, a model of tied embeddings
/// (looked up on the GPU) and one of untied (each token picked on the GPU, read, then run), a
/// prompt of two chunks.
#[test]
fn decoding_ahead_on_the_gpu_generates_what_the_host_picks() {
    use hearth_core::lora::{Adapter, LoraConfig, Target};
    use hearth_core::model::generate::{generate_until, Decoding, GenerateParams, Generation, StopReason};
    use hearth_core::model::gpu_picks::decode_batch_on_gpu;
    use hearth_core::model::sampling::SamplingParams;
    use hearth_core::model::Tokenizer;
    type Outcome = (Result<Generation, String>, Vec<String>, usize);
    fn on_host(ctx: &GpuContext, model: &mut Model, tok: &Tokenizer, prompt: &[u32], params: &GenerateParams, cancel_at: usize) -> Outcome {
        let mut pieces = Vec::new();
        let mut on_text = |p: &str| {
            pieces.push(p.to_string());
            pieces.len() < cancel_at
        };
        let mut run = || -> hearth_core::Result<Generation> {
            let (mut d, mut logits) = pollster::block_on(Decoding::prefill(ctx, model, prompt, params))?;
            while let Some(id) = d.next(tok, &mut logits, &mut on_text)? {
                logits = pollster::block_on(model.forward(ctx, &[id]))?;
            }
            d.finish(tok, &mut on_text)
        };
        let g = run().map_err(|e| e.to_string());
        (g, pieces, model.cache.len())
    }
    fn ahead(ctx: &GpuContext, model: &mut Model, tok: &Tokenizer, prompt: &[u32], params: &GenerateParams, cancel_at: usize) -> Outcome {
        let mut pieces = Vec::new();
        let g = pollster::block_on(generate_until(ctx, model, tok, prompt, params, |p| {
            pieces.push(p.to_string());
            pieces.len() < cancel_at
        }));
        (g.map_err(|e| e.to_string()), pieces, model.cache.len())
    }
    // as `hearth serve` decodes a request: its first token taken by `Decoding::start`, then
    // steps of a batch of one, each token picked on the GPU where the sampler lets it
    fn served(ctx: &GpuContext, model: &mut Model, tok: &Tokenizer, prompt: &[u32], params: &GenerateParams, cancel_at: usize) -> Outcome {
        let mut pieces = Vec::new();
        let mut on_text = |p: &str| {
            pieces.push(p.to_string());
            pieces.len() < cancel_at
        };
        let mut cache = model.new_cache(ctx).unwrap();
        model.swap_cache(&mut cache);
        let started = pollster::block_on(Decoding::start(ctx, model, tok, prompt, params, &mut on_text));
        model.swap_cache(&mut cache);
        let run = || -> hearth_core::Result<Generation> {
            let (mut d, mut next) = started?;
            while let Some(id) = next {
                let (first, steps, mut out) = (d.pick(), d.left(), None);
                let accept = |_, id| {
                    let o = d.accept(tok, id, &mut on_text);
                    let go_on = matches!(o, Ok(Some(_)));
                    out = Some(o);
                    Ok(go_on)
                };
                pollster::block_on(decode_batch_on_gpu(ctx, model, &mut [&mut cache], &[id], &[first], accept, |k| k < steps))?;
                next = out.expect("a step ran")?;
            }
            d.finish(tok, &mut on_text)
        };
        let g = run().map_err(|e| e.to_string());
        (g, pieces, cache.len())
    }
    for (name, tied) in [("tiny-llama32", true), ("tiny-llama", false)] {
        let m = load_hf_folder(&DirFiles(fixture(name)), None).unwrap();
        let mut tok = m.tokenizer;
        let model_eos = tok.eos_ids.clone();
        for ctx in [hearth_tests::gpu(), hearth_tests::gpu_kernels()].into_iter().flatten() {
            tok.eos_ids = model_eos.clone();
            let prompt: Vec<u32> = (0..11).map(|i| 3 + 17 * i % 290).collect();
            let mut model = Model::new(ctx, &m.cfg, m.weights.clone(), ModelOptions { chunk: 8, max_seq: 64, max_binding: None }).unwrap();
            assert_eq!(model.decodes_ahead(ctx), tied, "{name}: tied embeddings are looked up on the GPU, untied ones on the host");
            let params = GenerateParams { max_new_tokens: 8, ..Default::default() };
            let (first, _, _) = on_host(ctx, &mut model, &tok, &prompt, &params, usize::MAX);
            let ids = first.unwrap().ids;
            assert_eq!(ids.len(), 8, "{ids:?}");
            // an id that first comes third or later, as EOS; a stop string inside the text
            let eos = ids.iter().enumerate().skip(2).find(|(k, id)| !ids[..*k].contains(id)).map(|(_, &id)| id).expect("a new id");
            let text = tok.decode(&ids, true).unwrap();
            let stop: String = text.chars().skip(text.chars().count() / 2).take(2).collect();
            struct Case {
                what: String,
                params: GenerateParams,
                /// on_text cancels at this piece
                cancel_at: usize,
                eos: Option<u32>,
                max_seq: usize,
                adapter: bool,
                /// whether its tokens are not the greedy ones
                changes_greedy: bool,
                /// how the host's generation ends (None: an error)
                ends: Option<StopReason>,
            }
            let case = |what: String, params: &GenerateParams| Case { what, params: params.clone(), cancel_at: usize::MAX, eos: None, max_seq: 64, adapter: false, changes_greedy: false, ends: Some(StopReason::MaxTokens) };
            let mut cases: Vec<Case> = [0, 1, 8].iter().map(|&n| case(format!("max_new_tokens {n}"), &GenerateParams { max_new_tokens: n, ..Default::default() })).collect();
            cases.push(Case { ends: Some(StopReason::StopString), ..case(format!("stop string {stop:?}"), &GenerateParams { stop_strings: vec![stop.clone()], ..params.clone() }) });
            cases.push(Case { eos: Some(eos), ends: Some(StopReason::Eos), ..case(format!("EOS {eos}"), &params) });
            cases.push(Case { cancel_at: 1, ends: Some(StopReason::Cancelled), ..case("cancelled at the first piece".into(), &params) });
            cases.push(Case { max_seq: prompt.len() + 3, ends: None, ..case("no room for the fourth token".into(), &params) });
            cases.push(Case { adapter: true, changes_greedy: true, ..case("an adapter on every linear layer".into(), &params) });
            for (t, top_k, top_p) in [(0.8, 0, 1.0), (1.2, 20, 0.9), (0.6, 0, 0.5)] {
                let sampling = SamplingParams { temperature: t, top_k, top_p, seed: 5, ..Default::default() };
                let params = GenerateParams { sampling, max_new_tokens: 12, ..params.clone() };
                cases.push(case(format!("sampled at T {t}, top-k {top_k}, top-p {top_p}"), &params));
            }
            // a repetition penalty over the prompt and the tokens picked ahead: greedy (which it
            // changes) and sampled, and with the cache reused (its kept tokens are seen too)
            for (t, penalty, reuse_cache) in [(0.0, 1.5, false), (0.9, 1.3, false), (0.0, 0.7, false), (0.0, 1.5, true)] {
                let sampling = SamplingParams { temperature: t, repetition_penalty: penalty, seed: 3, ..Default::default() };
                let params = GenerateParams { sampling, max_new_tokens: 12, reuse_cache, ..params.clone() };
                let what = format!("repetition penalty {penalty} at T {t}, reusing the cache: {reuse_cache}");
                cases.push(Case { changes_greedy: t == 0.0, ..case(what, &params) });
            }
            // sampled until a token it draws (a new one, third or later) as EOS
            let sampled = GenerateParams { sampling: SamplingParams { temperature: 1.0, seed: 1, ..Default::default() }, ..params.clone() };
            let ids = on_host(ctx, &mut model, &tok, &prompt, &sampled, usize::MAX).0.unwrap().ids;
            let eos = ids.iter().enumerate().skip(2).find(|(k, id)| !ids[..*k].contains(id)).map(|(_, &id)| id).expect("a new id");
            cases.push(Case { ends: Some(StopReason::Eos), eos: Some(eos), ..case(format!("sampled, EOS {eos}"), &sampled) });
            for Case { what, params, cancel_at, eos, max_seq, adapter, changes_greedy, ends } in cases {
                tok.eos_ids = eos.map_or(model_eos.clone(), |id| vec![id]);
                let what = format!("{name}, {:?} kernels, {what}", ctx.kernel_paths());
                let mut model = Model::new(ctx, &m.cfg, m.weights.clone(), ModelOptions { chunk: 8, max_seq, max_binding: None }).unwrap();
                if adapter {
                    let mut a = Adapter::init(&m.cfg, &LoraConfig { r: 4, alpha: 8.0, targets: Target::ALL.to_vec(), ..Default::default() }, 5).unwrap();
                    for t in &mut a.tensors {
                        t.b.iter_mut().enumerate().for_each(|(i, x)| *x = ((i % 5) as f32 - 2.0) * 0.1);
                    }
                    model.set_adapter(ctx, Some(a), "a nonzero adapter").unwrap();
                }
                let want = on_host(ctx, &mut model, &tok, &prompt, &params, cancel_at);
                let cached = |model: &Model, g: &Result<Generation, String>| g.as_ref().ok().map(|g| model.cached_prefix(&[&prompt[..], &g.ids].concat()));
                let want_cached = cached(&model, &want.0);
                assert_eq!(want.0.as_ref().ok().map(|g| g.stop.clone()), ends, "{what}: the host's generation {:?}", want.0);
                if changes_greedy {
                    assert_ne!(want.0.as_ref().unwrap().ids[..8], ids, "{what}: the tokens should not be the greedy ones");
                }
                let got = ahead(ctx, &mut model, &tok, &prompt, &params, cancel_at);
                let got_cached = cached(&model, &got.0);
                assert_eq!(format!("{:?}", got.0), format!("{:?}", want.0), "{what}: the generation");
                assert_eq!((&got.1, got.2, got_cached), (&want.1, want.2, want_cached), "{what}: the pieces streamed, the tokens cached and those that match");
                // served (the batch's own error where the cache has no room)
                let (g, pieces, cached) = served(ctx, &mut model, &tok, &prompt, &params, cancel_at);
                match (&g, &want.0) {
                    (Ok(g), Ok(w)) => assert_eq!((format!("{g:?}"), &pieces, cached), (format!("{w:?}"), &want.1, want.2), "{what}: served (and the tokens cached)"),
                    (Err(_), Err(_)) => {}
                    _ => panic!("{what}: served {g:?}, the host's {:?}", want.0),
                }
            }
        }
    }
}

/// A batch of sequences (a server's requests) has its tokens picked on the GPU and reads only
/// them: what the host picks from each row of the logits the batch would have read, step after
/// step (greedy rows, and rows drawing at their own temperature, top-k, top-p and seed, with
/// and without a repetition penalty over the prompt's and the picked tokens), on both kernel
/// paths, caches made together (one attention launch, one pick launch) or apart, one row and
/// three. Where the model looks its tokens up on the GPU (tied embeddings), each step runs
/// ahead of the host's read of the one before: decoding that the caller ends after a step
/// (as a server does when requests end), or that stops stepping ahead (a request waits to
/// join), leaves the caches holding the tokens before the last picks it took, and goes on
/// from there as if it had not stopped; where only one sequence ends, the others keep the
/// step run ahead and take its picks.
#[test]
fn a_batch_picks_on_the_gpu_what_the_host_picks_from_its_logits() {
    use hearth_core::model::gpu_picks::decode_batch_on_gpu;
    use hearth_core::model::sampling::{argmax, pick_token, Sampler, SamplingParams};
    let prompts: [Vec<u32>; 3] = [vec![3, 17, 99], vec![5, 8, 13, 21, 34, 55, 89], (0..20).map(|i| (i * 37 + 11) % 250).collect()];
    let all_samplers = [
        Sampler::new(SamplingParams::default()),
        Sampler::new(SamplingParams { temperature: 1.0, seed: 9, ..Default::default() }),
        Sampler::new(SamplingParams { temperature: 0.7, top_k: 30, top_p: 0.9, seed: 4, ..Default::default() }),
        Sampler::new(SamplingParams { repetition_penalty: 1.8, ..Default::default() }),
        Sampler::new(SamplingParams { temperature: 0.9, top_p: 0.95, repetition_penalty: 1.3, seed: 2, ..Default::default() }),
    ];
    const STEPS: usize = 8;
    // the calls decoding the STEPS steps, in turn: (how many steps run ahead before the caller
    // stops stepping ahead, the call's pick of a sequence at which the caller ends every
    // sequence (or only the first, where false), as a server does when requests end); then
    // calls that do neither, where steps are left (none runs ahead where the host looks tokens
    // up: a call a step). Each call decodes the sequences that have steps left; each ends
    // after its last.
    let calls = [(usize::MAX, 3, true), (1, usize::MAX, true), (usize::MAX, 1, false)];
    for (name, tied) in [("tiny-llama", false), ("tiny-llama32", true)] {
        let m = load_hf_folder(&DirFiles(fixture(name)), None).unwrap();
        for ctx in [hearth_tests::gpu(), hearth_tests::gpu_kernels()].into_iter().flatten() {
            let mut model = Model::new(ctx, &m.cfg, m.weights.clone(), ModelOptions { chunk: 8, max_seq: 64, max_binding: None }).unwrap();
            assert_eq!(model.decodes_ahead(ctx), tied, "{name}");
            for (rows, together, first) in [(1, false, 0), (1, false, 1), (3, false, 0), (3, true, 0), (3, false, 2), (3, true, 2)] {
                let samplers = &all_samplers[first..first + rows];
                let what = format!("{name}, {:?} kernels, {rows} rows from sampler {first}, caches made together: {together}", ctx.kernel_paths());
                let mut sets: Vec<Vec<KvCache>> = (0..2)
                    .map(|_| if together { model.new_caches(ctx, rows).unwrap() } else { (0..rows).map(|_| model.new_cache(ctx).unwrap()).collect() })
                    .collect();
                let mut starts = Vec::new();
                for set in &mut sets {
                    starts.clear();
                    for (prompt, cache) in prompts.iter().zip(set.iter_mut()) {
                        model.swap_cache(cache);
                        starts.push(argmax(&pollster::block_on(model.forward(ctx, prompt)).unwrap()));
                        model.swap_cache(cache);
                    }
                }
                let [read, picked] = &mut sets[..] else { unreachable!() };
                // the host's picks from the logits read, step by step; each sequence's tokens
                // (a repetition penalty's)
                let mut want: Vec<Vec<u32>> = Vec::new();
                let mut seen: Vec<Vec<u32>> = prompts[..rows].to_vec();
                // picks a penalty changed
                let mut penalized = 0;
                let mut tokens = starts.clone();
                for step in 0..STEPS as u32 {
                    let logits = pollster::block_on(model.decode_batch(ctx, &mut read.iter_mut().collect::<Vec<_>>(), &tokens)).unwrap();
                    seen.iter_mut().zip(&tokens).for_each(|(s, &t)| s.push(t));
                    tokens = Vec::new();
                    for ((row, s), seen) in logits.chunks(m.cfg.vocab_size).zip(samplers).zip(&seen) {
                        tokens.push(s.sample(&mut row.to_vec(), seen, step));
                        penalized += usize::from(pick_token(row, &s.pick(step)) != tokens[tokens.len() - 1]);
                    }
                    want.push(tokens.clone());
                }
                let penalties = samplers.iter().any(|s| s.pick(0).repetition_penalty != 1.0);
                assert_eq!(penalized > 0, penalties, "{what}: {penalized} picks changed by a penalty");
                // the same steps picked on the GPU, in the calls above: each sequence's picks
                // taken so far (a server's tokens; the last of them runs next) and its last
                let (mut step, mut tokens) = (vec![0; rows], starts.clone());
                for c in 0.. {
                    let live: Vec<usize> = (0..rows).filter(|&r| step[r] < STEPS).collect();
                    let Some(&(ahead_for, ends_after, all)) = calls.get(c).or((!live.is_empty()).then_some(&(usize::MAX, usize::MAX, true))) else { break };
                    let first_picks: Vec<_> = live.iter().map(|&r| samplers[r].pick(step[r] as u32)).collect();
                    let (input, left): (Vec<u32>, _) = (live.iter().map(|&r| tokens[r]).collect(), STEPS - live.iter().map(|&r| step[r]).min().unwrap_or(STEPS));
                    let (mut asked, mut first_ended, mut in_call) = (0, false, vec![0; rows]);
                    let accept = |i: usize, id| {
                        let r = live[i];
                        assert_eq!(id, want[step[r]][r], "{what}, call {c}, sequence {r}'s step {}", step[r]);
                        tokens[r] = id;
                        step[r] += 1;
                        in_call[r] += 1;
                        let ends = in_call[r] == ends_after && (all || r == 0);
                        first_ended |= ends && r == 0;
                        Ok(!ends && step[r] < STEPS)
                    };
                    let ahead = |k| {
                        asked += 1;
                        k < left && asked <= ahead_for
                    };
                    let mut held: Vec<&mut KvCache> = picked.iter_mut().enumerate().filter(|(r, _)| live.contains(r)).map(|(_, c)| c).collect();
                    pollster::block_on(decode_batch_on_gpu(ctx, &mut model, &mut held, &input, &first_picks, accept, ahead)).unwrap();
                    assert!(!tied || asked > 0, "{what}, call {c}: no step ran ahead");
                    assert!(all || first_ended, "{what}, call {c}: the first sequence did not end");
                    if !all {
                        // the others keep the step run ahead and take its picks (where it ran)
                        let lead = usize::from(tied);
                        assert!(live.iter().skip(1).all(|&r| step[r] == step[0] + lead), "{what}, call {c}: steps {step:?} after the first sequence ended");
                    }
                    for (r, cache) in picked.iter().enumerate() {
                        let held = prompts[r].len() + step[r];
                        assert_eq!((cache.len(), cache.cached_prefix(&seen[r][..held])), (held, held), "{what}, call {c}: sequence {r}'s cache after step {}", step[r]);
                    }
                }
                assert_eq!(step, vec![STEPS; rows], "{what}");
            }
        }
    }
}

#[test]
fn tiny_qwen3_with_head_norms_matches_transformers() {
    check("tiny-qwen3", None, None, 2e-4, 1e-4);
}

#[test]
fn tiny_smollm3_with_a_nope_layer_matches_transformers() {
    let m = load_hf_folder(&DirFiles(fixture("tiny-smollm3")), None).unwrap();
    assert_eq!(m.cfg.nope_layers, vec![3], "the fourth layer has no rope");
    check("tiny-smollm3", None, None, 2e-4, 1e-4);
}

/// `hearth info`'s parameter count is transformers' (tied embeddings counted once; q/k/v
/// biases, head norms and every norm included).
#[test]
fn parameter_counts_match_transformers() {
    for name in ["tiny-llama", "tiny-llama3", "tiny-llama32", "tiny-qwen2", "tiny-mistral", "tiny-qwen3", "tiny-smollm3", "tiny-gemma3", "tiny-phi3"] {
        let r: Value = serde_json::from_str(&std::fs::read_to_string(fixture(name).join("reference.json")).unwrap()).unwrap();
        let cfg = load_hf_folder(&DirFiles(fixture(name)), None).unwrap().cfg;
        assert_eq!(cfg.param_count() as u64, r["param_count"].as_u64().unwrap(), "{name}");
    }
}

/// A config that switches on what Hearth does not compute is refused on load, naming the
/// feature: never run with other numbers.
#[test]
fn unimplemented_features_are_refused_by_name() {
    let base: Value = serde_json::from_str(&std::fs::read_to_string(fixture("tiny-qwen3").join("config.json")).unwrap()).unwrap();
    let cases: [(&str, Value, &str); 6] = [
        ("use_sliding_window", Value::Bool(true), "use_sliding_window"),
        ("attn_logit_softcapping", serde_json::json!(50.0), "attn_logit_softcapping"),
        ("final_logit_softcapping", serde_json::json!(30.0), "final_logit_softcapping"),
        ("num_experts", serde_json::json!(8), "mixture-of-experts"),
        ("layer_types", serde_json::json!(["full_attention", "linear_attention"]), "\"linear_attention\" layers"),
        ("rope_scaling", serde_json::json!({"rope_type": "yarn", "factor": 4.0}), "rope scaling \"yarn\""),
    ];
    for (key, value, named) in cases {
        let mut cfg = base.clone();
        cfg[key] = value;
        let err = hearth_core::model::Config::from_hf_json(&cfg.to_string(), "config.json").unwrap_err().to_string();
        assert!(err.contains("config.json") && err.contains(named), "{key}: {err}");
    }
    for (family, named) in [("olmo2", "\"olmo2\" is not supported"), ("gemma3", "the multimodal Gemma 3")] {
        let mut other = base.clone();
        other["model_type"] = family.into();
        let err = hearth_core::model::Config::from_hf_json(&other.to_string(), "config.json").unwrap_err().to_string();
        assert!(err.contains(named), "{err}");
    }
}

/// Sequences decoded together (a server's requests) get the logits each gets alone: three
/// prompts of different lengths, each with its own cache, then steps of one token each, on
/// the emulator's kernels and the GPU ones (where several rows take another matmul kernel
/// than one, so the sums' order differs: 1e-5). A model with per-head norms, one with sliding
/// windows (the longest prompt passes the window) and one with an adapter. With caches made
/// apart, each sequence's token attends in a launch of its own; with caches made together (as
/// a server makes them), all of them in one launch per layer, whatever order the batch holds
/// them in. On the GPU kernels, the rows' q, k and v are one normed launch per layer.
#[test]
fn batched_decoding_gives_each_sequence_its_own_logits() {
    use hearth_core::lora::{Adapter, LoraConfig};
    let prompts: [Vec<u32>; 3] = [vec![3, 17, 99], vec![5, 8, 13, 21, 34, 55, 89], (0..20).map(|i| (i * 37 + 11) % 250).collect()];
    let steps: [[u32; 3]; 4] = [[7, 8, 9], [100, 2, 44], [250, 251, 1], [12, 12, 12]];
    let run = |ctx: &GpuContext, name: &str, adapter: bool| {
        let m = load_hf_folder(&DirFiles(fixture(name)), None).unwrap();
        let mut model = Model::new(ctx, &m.cfg, m.weights, ModelOptions { chunk: 8, max_seq: 64, max_binding: None }).unwrap();
        if adapter {
            let mut a = Adapter::init(&m.cfg, &LoraConfig { r: 4, alpha: 8.0, ..Default::default() }, 7).unwrap();
            for t in &mut a.tensors {
                t.b.iter_mut().enumerate().for_each(|(i, x)| *x = ((i % 7) as f32 - 3.0) * 0.05);
            }
            model.set_adapter(ctx, Some(a), "a nonzero adapter").unwrap();
        }
        // each sequence alone, through the model's own cache
        let mut alone = Vec::new();
        for (s, prompt) in prompts.iter().enumerate() {
            model.reset();
            let mut rows = vec![pollster::block_on(model.forward(ctx, prompt)).unwrap()];
            for step in &steps {
                rows.push(pollster::block_on(model.forward(ctx, &[step[s]])).unwrap());
            }
            alone.push(rows);
        }
        let (layers, decode_kernel) = (m.cfg.n_layers as u64, m.cfg.head_size.is_multiple_of(4));
        for together in [false, true] {
            // each prompt into a cache of its own: apart (the first the model's own, taken out),
            // or made together
            model.reset();
            let mut caches = if together {
                model.new_caches(ctx, prompts.len()).unwrap()
            } else {
                let mut caches = vec![model.take_cache(ctx).unwrap()];
                caches.extend((1..prompts.len()).map(|_| model.new_cache(ctx).unwrap()));
                caches
            };
            for (s, (prompt, cache)) in prompts.iter().zip(&mut caches).enumerate() {
                model.swap_cache(cache);
                let first = pollster::block_on(model.forward(ctx, prompt)).unwrap();
                model.swap_cache(cache);
                assert!(first == alone[s][0], "{name}: sequence {s}'s prompt");
            }
            let order = if together { [2, 0, 1] } else { [0, 1, 2] };
            let v = model.cfg.vocab_size;
            for (i, step) in steps.iter().enumerate() {
                let mut slots: Vec<Option<&mut KvCache>> = caches.iter_mut().map(Some).collect();
                let mut held: Vec<&mut KvCache> = order.iter().map(|&s| slots[s].take().unwrap()).collect();
                let tokens: Vec<u32> = order.iter().map(|&s| step[s]).collect();
                ctx.profile_begin();
                let logits = pollster::block_on(model.decode_batch(ctx, &mut held, &tokens)).unwrap();
                let kernels = hearth_tests::profiled_kernels(ctx);
                for (r, &s) in order.iter().enumerate() {
                    let want: Vec<f64> = alone[s][i + 1].iter().map(|&x| x as f64).collect();
                    assert_close(&format!("{name}: sequence {s}, step {i}, caches made together: {together}"), &logits[r * v..(r + 1) * v], &want, 1e-5, 1e-5);
                }
                let launches: u64 = kernels.iter().filter(|(k, _)| k.contains(":attention_decode [")).map(|(_, s)| s.launches).sum();
                let want = match (decode_kernel, together) {
                    (false, _) => 0,
                    (true, false) => 3 * layers,
                    (true, true) => layers,
                };
                assert_eq!(launches, want, "{name}: the decode attention's launches, caches made together: {together}");
                // on GPUs, the three tokens' q, k and v in one matrix-vector launch per layer
                // that norms its input, writing each part apart (the f16 weights' kernel, or
                // the f32 one, which runs an adapter's x·Aᵀ too: the f32 models have none);
                // per-head norms of q and k keep them apart
                if ctx.kernel_paths() == hearth_core::gpu::KernelPaths::Gpu {
                    let kernel = if adapter { "_normed:matmul_quant_gemv [" } else { "_normed:matmul_gemv [" };
                    let qkv: u64 = kernels.iter().filter(|(k, _)| k.contains(kernel)).map(|(_, s)| s.launches).sum();
                    assert_eq!(qkv, if m.cfg.qk_norm { 0 } else { layers }, "{name}: q, k and v's launches: {kernels:?}");
                }
            }
        }
    };
    // contexts of their own, so that their launches are counted alone
    let Some(own) = hearth_tests::own_gpu() else { return };
    let gpu_kernels = hearth_tests::own_gpu().expect("a second context").with_kernel_paths(hearth_core::gpu::KernelPaths::Gpu);
    // (tiny-llama's weights are f16, the others' f32)
    for (name, adapter) in [("tiny-qwen3", false), ("tiny-gemma3-p6", false), ("tiny-llama", true)] {
        run(&own, name, adapter);
        run(&gpu_kernels, name, adapter);
    }
}
