//! LoRA training against HF transformers + PEFT (fixtures from
//! tests/reference/peft_reference.py) on the tiny Llama, Qwen2, Qwen3, SmolLM3, Gemma 3 and
//! Phi-3 models, f32 base:
//! - the data pipeline gives PEFT's token ids and loss masks;
//! - the step-one LoRA gradients match: |g − PEFT| ≤ 1e-6 + 1e-3·|g| (f32 kernels against
//!   PyTorch's f32 CPU autograd; gradients here are ~1e-3);
//! - ten AdamW steps (accumulation 2, clipping, weight decay, warmup + linear decay) give
//!   per-step losses within 1e-3 relative of PEFT's (the bound; measured ~1e-6);
//! - an adapter PEFT trained and saved, loaded by Hearth, scores the NLL PEFT reports
//!   within 1e-4;
//! - Hearth's adapter loaded into PEFT (hearth_adapter.json) gives the NLL Hearth computes.

use hearth_core::io::load::{load_hf_folder, LoadedModel};
use hearth_core::lora::{peft, Adapter, LoraConfig};
use hearth_core::model::backward::{Dropout, TrainPass};
use hearth_core::model::{Model, ModelOptions};
use hearth_core::ops::adamw::AdamwConfig;
use hearth_core::train::batch::pack;
use hearth_core::train::data::{parse_records, prepare, DataOptions, Example, Template};
use hearth_core::train::schedule::Schedule;
use hearth_core::train::trainer::{TrainConfig, Trainer};
use hearth_core::GpuContext;
use hearth_tests::{assert_close, fixture, with_gpu, with_gpu_kernels, DirFiles};
use serde_json::Value;

fn reference(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(&format!("peft/{name}/reference.json"))).unwrap()).unwrap()
}

fn read_adapter(dir: &str) -> Adapter {
    let d = fixture(dir);
    let cfg = std::fs::read_to_string(d.join(peft::CONFIG_FILE)).unwrap();
    let w = std::fs::read(d.join(peft::WEIGHTS_FILE)).unwrap();
    peft::read(&cfg, &w, dir).unwrap()
}

fn load(name: &str) -> LoadedModel {
    load_hf_folder(&DirFiles(fixture(name)), None).unwrap()
}

/// Fixture `name`'s training data (peft/NAME/data.jsonl) as PEFT's script prepared it: the
/// prompt and completion concatenated, the loss on the completion.
fn fixture_examples(name: &str, m: &LoadedModel) -> Vec<Example> {
    let text = std::fs::read_to_string(fixture(&format!("peft/{name}/data.jsonl"))).unwrap();
    let records = parse_records("data.jsonl", &text).unwrap();
    let opts = DataOptions { template: Template::parse("{prompt}{completion}"), max_seq_len: 256, train_on_prompt: false, enable_thinking: None };
    prepare(&records, &m.tokenizer, &opts).unwrap().0
}

fn model(ctx: &GpuContext, m: &LoadedModel) -> Model {
    model_split(ctx, m, None)
}

/// With `max_binding`, a lm_head larger than it is split into parts.
fn model_split(ctx: &GpuContext, m: &LoadedModel, max_binding: Option<u64>) -> Model {
    Model::new(ctx, &m.cfg, m.weights.clone(), ModelOptions { chunk: 64, max_seq: 128, max_binding }).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn train_config(r: &Value) -> TrainConfig {
    let h = &r["hyper"];
    let f = |k: &str| h[k].as_f64().unwrap();
    TrainConfig {
        lora: LoraConfig { r: 4, alpha: 8.0, rslora: false, dropout: 0.0, targets: hearth_core::lora::Target::ALL.to_vec() },
        adamw: AdamwConfig { lr: f("lr") as f32, weight_decay: f("weight_decay") as f32, ..AdamwConfig::default() },
        max_grad_norm: f("max_grad_norm") as f32,
        schedule: Schedule::Linear,
        warmup_steps: f("warmup") as usize,
        batch_size: f("batch_size") as usize,
        grad_accum: f("grad_accum") as usize,
        max_steps: Some(f("steps") as usize),
        ..TrainConfig::default()
    }
}

fn check(name: &str) {
    with_gpu!(ctx => { check_on(ctx, name, &F32) });
}

/// How close to PEFT: step one's gradients (atol, rtol, and a further atol of this much of
/// the tensor's largest magnitude), the per-step losses (rtol) and the NLL of PEFT's trained
/// adapter (atol).
struct Tolerance {
    grads: (f64, f64),
    grads_of_largest: f64,
    losses: f64,
    nll: f64,
}

/// f32 matmuls.
const F32: Tolerance = Tolerance { grads: (1e-6, 1e-3), grads_of_largest: 0.0, losses: 1e-3, nll: 1e-4 };
/// Training with f16 matmuls (f16 tiles or cooperative matrices): each gradient within 3e-3 of
/// its tensor's largest value instead of f32's atol (why: the f16 tiles' test below).
const F16_MATMULS: Tolerance = Tolerance { grads: (0.0, 1e-3), grads_of_largest: 3e-3, ..F32 };

fn check_on(ctx: &GpuContext, name: &str, tol: &Tolerance) {
    let r = reference(name);
    let m = load(name);
    // data: PEFT's token ids and loss masks
    let examples = fixture_examples(name, &m);
    for (i, ex) in examples.iter().enumerate() {
        assert_eq!(ex.tokens, ids(&r["ids"][i]), "{name}: example {i} token ids");
        let mask: Vec<bool> = r["loss_mask"][i].as_array().unwrap().iter().map(|x| x.as_u64() == Some(1)).collect();
        assert_eq!(ex.loss, mask, "{name}: example {i} loss mask");
    }

    check_step_one_grads(ctx, name, &m, &examples, None, tol);
    let initial = read_adapter(&format!("peft/{name}/initial"));

    // ten steps
    let cfg = train_config(&r);
    let mut trainer = Trainer::new(ctx, model(ctx, &m), initial, cfg, examples, &[]).unwrap();
    let mut losses = Vec::new();
    while !trainer.done() {
        losses.push(pollster::block_on(trainer.step(ctx)).unwrap().loss);
    }
    let want: Vec<f64> = r["losses"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    assert_close(&format!("{name} per-step losses"), &losses.iter().map(|&x| x as f32).collect::<Vec<_>>(), &want, 0.0, tol.losses);

    // PEFT's trained adapter scores PEFT's NLL in Hearth
    let mut mdl = model(ctx, &m);
    mdl.set_adapter(ctx, Some(read_adapter(&format!("peft/{name}/trained"))), "trained").unwrap();
    let (n, total) = pollster::block_on(mdl.score(ctx, &ids(&r["text_ids"]))).unwrap();
    let nll = total / n as f64;
    let want = r["trained_text_nll"].as_f64().unwrap();
    assert!((nll - want).abs() < tol.nll, "{name}: NLL with PEFT's trained adapter {nll}, PEFT {want}");
}

/// The step-one gradients from PEFT's initial adapter match PEFT's, with the lm_head in
/// parts when `max_binding` splits it.
fn check_step_one_grads(ctx: &GpuContext, name: &str, m: &LoadedModel, examples: &[Example], max_binding: Option<u64>, tol: &Tolerance) {
    let r = reference(name);
    let initial = read_adapter(&format!("peft/{name}/initial"));
    let mut mdl = model_split(ctx, m, max_binding);
    if max_binding.is_some() {
        assert!(mdl.lm_head_parts() > 1, "{name}: the lm_head should have been split");
    }
    mdl.set_adapter(ctx, Some(initial.clone()), "initial").unwrap();
    let mut pass = TrainPass::new(ctx, &mdl, 128, false).unwrap();
    let micro = [pack(&[&examples[0], &examples[1]]), pack(&[&examples[2], &examples[3]])];
    let counted: usize = micro.iter().map(|b| b.counted()).sum();
    for (j, b) in micro.iter().enumerate() {
        pollster::block_on(pass.forward_backward(ctx, &mdl, b, 1.0 / counted as f32, Dropout::OFF, j > 0)).unwrap();
    }
    let grads = &r["step1_grads"];
    for (t, (da, db)) in initial.tensors.iter().zip(&pass.grads) {
        let p = t.peft_prefix();
        for (which, buf) in [("lora_A", da), ("lora_B", db)] {
            let key = format!("{p}.{which}.weight");
            let want: Vec<f64> = grads[&key].as_array().unwrap_or_else(|| panic!("{key} missing")).iter().map(|x| x.as_f64().unwrap()).collect();
            let got = pollster::block_on(ctx.read_f32_prefix(buf, want.len())).unwrap();
            let largest = want.iter().fold(0.0f64, |a, w| a.max(w.abs()));
            let atol = tol.grads.0 + tol.grads_of_largest * largest;
            assert_close(&format!("{name} step-1 grad {key}"), &got, &want, atol, tol.grads.1);
        }
    }
}

/// The backward through a lm_head split across bindings (the gradient's columns gathered
/// part by part) gives PEFT's step-one gradients too.
#[test]
fn step_one_gradients_through_a_split_lm_head_match_peft() {
    with_gpu!(ctx => {
        let name = "tiny-llama";
        let m = load(name);
        let examples = fixture_examples(name, &m);
        // 300 × 64 × 4 bytes = 76800: a 20000-byte binding splits it into 4 parts
        check_step_one_grads(ctx, name, &m, &examples, Some(20000), &F32);
    });
}

#[test]
fn tiny_llama_lora_training_matches_peft() {
    check("tiny-llama");
}

/// The same with the GPU kernels (workgroup-tiled matmuls and attention), which software
/// adapters do not pick: run here through the whole model on lavapipe.
#[test]
fn tiny_llama_lora_training_matches_peft_with_the_gpu_kernels() {
    with_gpu_kernels!(ctx => { check_on(ctx, "tiny-llama", &F32) });
}

/// Training with f16 matmuls (HEARTH_F16_MATMUL=1; here lavapipe's shader-f16 with the GPU
/// kernels): forwards and input gradients in f16 tiles, the output gradients' rows scaled by
/// powers of two as they are staged (pieces/row_scales.wgsl). Their inputs keep 11
/// significant bits, so each gradient gets 3e-3 of its tensor's largest value (measured on
/// lavapipe: at most 8.3e-4; its values, 1e-6 to 2e-3, are below f32's atol of 1e-6 in places,
/// so that bound alone would say little) besides f32's bounds; the losses and the NLL
/// keep f32's ([`F16_MATMULS`]).
#[test]
fn tiny_llama_lora_training_with_f16_matmuls_stays_close_to_peft() {
    let Some(ctx) = hearth_tests::own_gpu_f16_matmuls() else { return };
    ctx.profile_begin();
    check_on(&ctx, "tiny-llama", &F16_MATMULS);
    // the base (its weights f16 in the fixture: the F16 format's kernels) in f16 tiles,
    // forwards and input gradients; LoRA's own products in f32 tiles
    let kernels = pollster::block_on(ctx.profile_end()).unwrap().kernels;
    for kernel in ["matmul_f16_f16_tiles:matmul_quant_forward_tiled", "matmul_f16_f16_tiles:matmul_quant_backward_input_tiled", "matmul_tiled:matmul_tiled"] {
        assert!(kernels.keys().any(|k| k.starts_with(kernel)), "{kernel} did not run: {kernels:?}");
    }
    assert!(!kernels.keys().any(|k| k.starts_with("matmul_tiled_f16")), "LoRA's products ran in f16: {kernels:?}");
}

/// The same on cooperative matrices (matmul_coop.wgsl), through tiny-qwen3, whose f32 base
/// goes to them (tiny-llama's f16 one stays in its format's f16 tiles). Skips where the adapter
/// has none: tests/coop/run.sh runs it on lavapipe 26.1 (8 × 8 × 8).
#[test]
fn tiny_qwen3_lora_training_on_cooperative_matrices_stays_close_to_peft() {
    let Some(ctx) = hearth_tests::own_gpu_coop_matmuls() else { return };
    ctx.profile_begin();
    check_on(&ctx, "tiny-qwen3", &F16_MATMULS);
    let kernels = pollster::block_on(ctx.profile_end()).unwrap().kernels;
    assert!(kernels.keys().any(|k| k.starts_with("matmul_coop")), "the cooperative-matrix kernel did not run: {kernels:?}");
}

#[test]
fn tiny_qwen2_lora_training_matches_peft() {
    check("tiny-qwen2");
}

/// Through the per-head q/k norms' backward.
#[test]
fn tiny_qwen3_lora_training_matches_peft() {
    check("tiny-qwen3");
}

/// Through a layer without rope.
#[test]
fn tiny_smollm3_lora_training_matches_peft() {
    check("tiny-smollm3");
}

/// Phi-3: adapters on the fused qkv_proj and gate_up_proj (one A for q, k and v), through
/// partial rotary with LongRoPE and a window on every layer.
#[test]
fn tiny_phi3_lora_training_matches_peft() {
    check("tiny-phi3");
}

/// Through Gemma 3's sliding windows (4 tokens; the examples are longer), post-norms and
/// GeGLU.
#[test]
fn tiny_gemma3_lora_training_matches_peft() {
    check("tiny-gemma3");
}

/// QLoRA and the other block formats: training through a quantized frozen base gives the
/// same losses as training through an f32 base holding the same (dequantized) weights, so
/// the backward through the quantized kernels is the f32 one. Bound 1e-4 relative: the same
/// weights summed in a different order.
#[test]
fn training_through_a_quantized_base_matches_its_dequantized_weights() {
    with_gpu!(ctx => { quantized_base_on(ctx) });
}

/// The same with the GPU kernels (the tiled quantized forward and input gradient).
#[test]
fn training_through_a_quantized_base_matches_with_the_gpu_kernels() {
    with_gpu_kernels!(ctx => { quantized_base_on(ctx) });
}

/// The same with f16 matmuls (the quantized and f32 tiled kernels' f16 tiles, forwards and
/// input gradients, their gradients' rows scaled), where the adapter has shader-f16: the same
/// weights round to the same f16 values in either kernel, so the bound stays 1e-4.
#[test]
fn training_through_a_quantized_base_matches_with_f16_matmuls() {
    let Some(ctx) = hearth_tests::own_gpu_f16_matmuls() else { return };
    ctx.profile_begin();
    quantized_base_on(&ctx);
    let kernels = pollster::block_on(ctx.profile_end()).unwrap().kernels;
    assert!(kernels.keys().any(|k| k.starts_with("matmul_q4_0_f16_tiles:matmul_quant_backward_input_tiled")), "{kernels:?}");
}

/// The same on cooperative matrices (matmul/quant_coop.wgsl against matmul_coop.wgsl for the
/// dense base), where the adapter offers them, in tiles of 64 and of 128 (4 × 4 accumulators
/// per subgroup): tests/coop/run.sh runs it on lavapipe 26.1.
#[test]
fn training_through_a_quantized_base_matches_on_cooperative_matrices() {
    let Some(narrow) = hearth_tests::own_gpu_coop_matmuls() else { return };
    let wide = hearth_tests::own_gpu_coop_wide_tiles().unwrap();
    for (ctx, tile) in [(narrow, "64x64"), (wide, "128x128")] {
        ctx.profile_begin();
        quantized_base_on(&ctx);
        let kernels = pollster::block_on(ctx.profile_end()).unwrap().kernels;
        for kernel in ["matmul_q4_0_coop", "matmul_nf4_coop"] {
            let ran = |k: &String| k.starts_with(kernel) && k.contains(":matmul_quant_backward_input_coop") && k.contains(tile);
            assert!(kernels.keys().any(ran), "{kernel} did not run in {tile} tiles: {kernels:?}");
        }
    }
}

fn quantized_base_on(ctx: &GpuContext) {
    use hearth_core::model::weights::{Matrix, MatrixData};
    use hearth_core::model::WeightFormat;
    let r = reference("tiny-llama");
    for fmt in ["nf4", "q4_0", "q8_0", "f16"] {
        // the layers whose rows hold whole blocks (NF4's are 64 wide; FF here is 96)
        let mut quant = load_hf_folder(&DirFiles(fixture("tiny-llama")), None).unwrap();
        let f = WeightFormat::parse(fmt).unwrap();
        for l in &mut quant.weights.layers {
            for m in [&mut l.q, &mut l.k, &mut l.v, &mut l.o, &mut l.gate, &mut l.up, &mut l.down] {
                if let Ok(q) = m.clone().convert(f) {
                    *m = q;
                }
            }
        }
        assert!(quant.weights.layers[0].q.format() == f, "{fmt}: q_proj should be quantized");
        let mut dense = quant.weights.clone();
        for l in &mut dense.layers {
            for m in [&mut l.q, &mut l.k, &mut l.v, &mut l.o, &mut l.gate, &mut l.up, &mut l.down] {
                *m = Matrix { name: m.name.clone(), rows: m.rows, cols: m.cols, data: MatrixData::F32(m.to_f32()) };
            }
        }
        let examples = fixture_examples("tiny-llama", &quant);
        let run = |w| {
            let mdl = Model::new(ctx, &quant.cfg, w, ModelOptions { chunk: 64, max_seq: 128, max_binding: None }).unwrap();
            let cfg = TrainConfig { max_steps: Some(3), ..train_config(&r) };
            // trained: B is not 0 from the first step, so that LoRA's products count
            let mut t = Trainer::new(ctx, mdl, read_adapter("peft/tiny-llama/trained"), cfg, examples.clone(), &[]).unwrap();
            (0..3).map(|_| pollster::block_on(t.step(ctx)).unwrap().loss).collect::<Vec<f64>>()
        };
        let got = run(quant.weights.clone());
        let want = run(dense);
        assert_close(&format!("{fmt} base losses"), &got.iter().map(|&x| x as f32).collect::<Vec<_>>(), &want, 0.0, 1e-4);
    }
}

/// PEFT's trained adapter merged by Hearth, written as an HF folder and loaded back, gives
/// the logits of PEFT's merge_and_unload (same bound as the tiny models' logits).
/// tests/reference/merged_in_transformers.py loads the same folders in transformers
/// (5.24, 2026-11-30: within 1e-7 of merge_and_unload, Gemma 3 within 2.1e-6).
#[test]
fn merged_models_of_each_family_give_peft_merged_logits() {
    use hearth_core::io::hf_export::{hf_folder, ExportDtype};
    use hearth_core::lora::merge::merge_into;
    with_gpu!(ctx => {
        for name in ["tiny-llama", "tiny-qwen2", "tiny-qwen3", "tiny-smollm3", "tiny-gemma3", "tiny-phi3"] {
            let r = reference(name);
            let mut m = load(name);
            let adapter = read_adapter(&format!("peft/{name}/trained"));
            adapter.check_against(&m.cfg, "trained").unwrap();
            merge_into(&mut m.weights, &adapter);
            let dir = std::env::temp_dir().join(format!("hearth-merged-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            for (file, bytes) in hf_folder(&m.cfg, &m.weights, &m.tokenizer, ExportDtype::F32).unwrap() {
                std::fs::write(dir.join(file), bytes).unwrap();
            }
            let merged = load_hf_folder(&DirFiles(dir.clone()), None).unwrap();
            assert_eq!(merged.cfg, m.cfg, "{name}: the exported config reads back the same");
            let mut mdl = model(ctx, &merged);
            let got = pollster::block_on(mdl.logits(ctx, &ids(&r["text_ids"]))).unwrap();
            let want: Vec<f64> = r["merged_logits"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            assert_close(&format!("{name} merged logits"), &got, &want, 2e-4, 1e-4);
            std::fs::remove_dir_all(&dir).unwrap();
        }
    });
}

/// An adapter `hearth train` saved, loaded into PEFT by the fixture script: Hearth's NLL of
/// the text with it equals PEFT's within 1e-4.
#[test]
fn hearth_adapter_loads_in_peft_with_the_same_nll() {
    with_gpu!(ctx => {
        let rec: Value = serde_json::from_str(&std::fs::read_to_string(fixture("peft/tiny-llama/hearth_adapter.json")).unwrap()).unwrap();
        let m = load("tiny-llama");
        let mut mdl = model(ctx, &m);
        mdl.set_adapter(ctx, Some(read_adapter("peft/tiny-llama/hearth-adapter")), "hearth-adapter").unwrap();
        let ids = m.tokenizer.encode(rec["text"].as_str().unwrap(), true).unwrap();
        let (n, total) = pollster::block_on(mdl.score(ctx, &ids)).unwrap();
        let want = rec["peft_text_nll"].as_f64().unwrap();
        assert!((total / n as f64 - want).abs() < 1e-4, "Hearth {} vs PEFT {want}", total / n as f64);
    });
}

/// A PEFT adapter for another base model is refused, naming the tensor.
#[test]
fn adapter_for_another_model_is_refused() {
    with_gpu!(ctx => {
        let m = load("tiny-llama");
        let mut mdl = model(ctx, &m);
        let mut a = read_adapter("peft/tiny-llama/initial");
        a.tensors[3].d_in += 8;
        let e = mdl.set_adapter(ctx, Some(a), "adapter-dir").unwrap_err().to_string();
        assert!(e.contains("adapter-dir") && e.contains("lora") || e.contains("layers.0"), "{e}");
        assert!(e.contains("another base model"), "{e}");
    });
}

/// LoRA inside the GPU kernels: the step-one gradients agree between lavapipe's kernels
/// (dropout and LoRA's products launched on their own around the register matmuls) and the
/// GPU kernels (the dropout mask applied inside the tiled matmuls, and h·Bᵀ and dh·A added in
/// the base matmuls' epilogues), without dropout and with it, on a plain model and on Phi-3's
/// fused qkv and gate_up (whose parts share one dropped input); and the dropout changes them.
#[test]
fn lora_fused_into_the_tiled_matmuls_gives_the_same_gradients() {
    let (Some(plain), Some(tiled)) = (hearth_tests::gpu(), hearth_tests::gpu_kernels()) else { return };
    for name in ["tiny-llama", "tiny-phi3"] {
        let m = load(name);
        let examples = fixture_examples(name, &m);
        let batch = pack(&[&examples[0], &examples[1]]);
        let grads = |ctx: &GpuContext, dropout: Dropout| -> Vec<f32> {
            let mut mdl = model(ctx, &m);
            // trained: B is not 0 (as PEFT initializes it), so that h·Bᵀ and dh·A count
            mdl.set_adapter(ctx, Some(read_adapter(&format!("peft/{name}/trained"))), "trained").unwrap();
            let mut pass = TrainPass::new(ctx, &mdl, 128, false).unwrap();
            pollster::block_on(pass.forward_backward(ctx, &mdl, &batch, 0.1, dropout, false)).unwrap();
            pass.grads.iter().flat_map(|(da, db)| [da, db]).flat_map(|b| pollster::block_on(ctx.read_f32(b)).unwrap()).collect()
        };
        let mut launched = Vec::new();
        for dropout in [Dropout::OFF, Dropout { p: 0.2, seed: 9 }] {
            let fused = grads(tiled, dropout);
            launched = grads(plain, dropout);
            let want: Vec<f64> = launched.iter().map(|&x| x as f64).collect();
            assert_close(&format!("{name}: gradients with dropout {}, tiled against lavapipe's kernels", dropout.p), &fused, &want, 1e-6, 1e-3);
        }
        let off = grads(plain, Dropout::OFF);
        let moved = off.iter().zip(&launched).filter(|(a, b)| (*a - *b).abs() > 1e-5).count();
        assert!(moved > launched.len() / 4, "{name}: dropout changed only {moved} of {} gradients", launched.len());
    }
}

/// The input gradients of the targets that read one input (q, k, v; gate, up) in one launch
/// through the layer's stacked weights, the parts' output gradients and LoRA's dh read in
/// blocks where the backward wrote them (TrainPass::inputs_backward): the step-one gradients
/// (which the earlier layers' LoRA gradients carry the input gradients into) agree with
/// lavapipe's kernels, one launch per target, for adapters on every target, on some of a
/// group, on one of a group, on none of them, and with q's rank unlike k's and v's (no
/// group: one launch per target), without dropout and with it; through rope, the q/k head
/// norms (Qwen3) and layers without rope (SmolLM3). With every target adapted, a layer's
/// backward runs 4 input-gradient launches instead of 7; a group's dA's are one launch, dB and
/// dh of two targets of one shape (k, v; gate, up) one batch each, and the forward's gate and
/// up one launch with their LoRA as its term (which these gradients carry); so are q, k and
/// v, also where the adapter leaves k or v alone (PEFT's default q_proj, v_proj): 4 forward
/// launches per layer.
#[test]
fn stacked_input_gradients_match_one_launch_per_target() {
    use hearth_core::gpu::KernelPaths;
    use hearth_core::lora::{Target, Target::*};
    use hearth_core::model::WeightFormat;
    let (Some(plain), Some(own)) = (hearth_tests::gpu(), hearth_tests::own_gpu()) else { return };
    // a context of its own: the launches are counted
    let tiled = own.with_kernel_paths(KernelPaths::Gpu);
    let adapter = |m: &LoadedModel, targets: &[Target], q_rank: usize| -> Adapter {
        let cfg = LoraConfig { r: 4, alpha: 8.0, rslora: false, dropout: 0.0, targets: targets.to_vec() };
        let mut a = Adapter::init(&m.cfg, &cfg, 3).unwrap();
        let mut rng = hearth_core::rng::Rng::new(5);
        for t in &mut a.tensors {
            if t.target == Q && q_rank != t.rank {
                t.rank = q_rank;
                t.a = rng.vec_uniform(q_rank * t.d_in, -0.1, 0.1);
            }
            // B ≠ 0 (as after training), so that h·Bᵀ and dh·A count
            t.b = rng.vec_uniform(t.d_out * t.rank, -0.1, 0.1);
        }
        a
    };
    let mut counted = false;
    for name in ["tiny-llama", "tiny-qwen3", "tiny-smollm3"] {
        let m = load(name);
        let examples = fixture_examples(name, &m);
        let batch = pack(&[&examples[0], &examples[1]]);
        // the gradients, and the input-gradient and forward launches of the base weights where
        // `counted` (the context of its own)
        let grads = |ctx: &GpuContext, a: &Adapter, dropout: Dropout, counted: bool| -> (Vec<f32>, [u64; 2]) {
            let mut mdl = model(ctx, &m);
            mdl.set_adapter(ctx, Some(a.clone()), "random").unwrap();
            let mut pass = TrainPass::new(ctx, &mdl, 128, false).unwrap();
            if counted {
                ctx.profile_begin();
            }
            pollster::block_on(pass.forward_backward(ctx, &mdl, &batch, 0.1, dropout, false)).unwrap();
            let launches = match counted {
                true => {
                    let kernels = pollster::block_on(ctx.profile_end()).unwrap().kernels;
                    ["backward_input", "matmul_quant_forward"].map(|name| kernels.iter().filter(|(k, _)| k.contains(name)).map(|(_, k)| k.launches).sum())
                }
                false => [0; 2],
            };
            (pass.grads.iter().flat_map(|(da, db)| [da, db]).flat_map(|b| pollster::block_on(ctx.read_f32(b)).unwrap()).collect(), launches)
        };
        let all = [Q, K, V, O, Gate, Up, Down];
        for (targets, q_rank) in [(&all[..], 4), (&[Q, V, Down][..], 4), (&[Q, K][..], 4), (&[K, Up][..], 4), (&[O][..], 4), (&all[..], 2)] {
            let a = adapter(&m, targets, q_rank);
            for dropout in [Dropout::OFF, Dropout { p: 0.2, seed: 9 }] {
                let (fused, launches) = grads(&tiled, &a, dropout, true);
                let want: Vec<f64> = grads(plain, &a, dropout, false).0.iter().map(|&x| x as f64).collect();
                let what = format!("{name}, LoRA on {targets:?} (q's rank {q_rank}), dropout {}", dropout.p);
                assert_close(&format!("{what}: gradients, stacked input gradients against one launch per target"), &fused, &want, 1e-6, 1e-3);
                // (counted where the weights are f16, whose input gradients have a kernel of
                // their own: the f32 ones share the tiled GEMM's entry point)
                if q_rank == 4 && m.weights.layers[0].q.format() != WeightFormat::F32 {
                    // down, o, q/k/v, gate/up per layer, and the lm_head's per row chunk: in
                    // the forward wherever one group adapts q, k and v or all but k or v
                    let layers = m.cfg.n_layers as u64;
                    if targets != [K, Up] {
                        assert_eq!(launches[1], 4 * layers + 1, "{what}: forward launches");
                    }
                    if targets == all {
                        assert_eq!(launches[0], 4 * layers + 1, "{what}: input-gradient launches");
                    }
                    counted = true;
                }
            }
        }
    }
    assert!(counted, "no model with f16 weights counted its launches");
}

/// Over a micro-batch long enough for the tiled kernels to split the LoRA weight gradients'
/// reductions (≥ 512 tokens), each gradient's parts go into one scratch per layer and one
/// launch per layer sums them (TrainPass's GradSums). The gradients agree with lavapipe's
/// kernels (which do not split), overwritten then accumulated, without dropout and with it,
/// on a plain model and on Phi-3's fused qkv and gate_up (whose dB parts write rows of one
/// gradient). The GPU lays the gradients out by layer whatever the adapter's order (its
/// tensors sorted by target: the same launches); an adapter whose layers differ in targets
/// sums each gradient on its own, with more launches.
#[test]
fn split_weight_gradients_summed_once_per_layer_match() {
    use hearth_core::gpu::{KernelPaths, TileChoice};
    use hearth_core::ops::matmul::{weight_grad_parts, weight_grad_splits};
    let (Some(plain), Some(own)) = (hearth_tests::gpu(), hearth_tests::own_gpu()) else { return };
    // a context of its own: the launches are counted
    let tiled = own.with_kernel_paths(KernelPaths::Gpu);
    for name in ["tiny-llama", "tiny-phi3"] {
        let m = load(name);
        let examples = fixture_examples(name, &m);
        let mut repeated: Vec<&Example> = Vec::new();
        for e in examples.iter().cycle() {
            if repeated.iter().map(|e| e.tokens.len()).sum::<usize>() >= 600 {
                break;
            }
            repeated.push(e);
        }
        let batch = pack(&repeated);
        assert!(batch.len() >= 600, "{name}: {} tokens", batch.len());
        // the gradients by (target, layer) after an overwriting and an accumulating backward,
        // and the launches of the two
        // the adapter as trained, its tensors sorted by target, and without layer 0's first
        #[derive(Clone, Copy, Debug)]
        enum Variant {
            ByLayer,
            ByTarget,
            Uneven,
        }
        let grads = |ctx: &GpuContext, variant: Variant| -> (Vec<f32>, u64) {
            let mut adapter = read_adapter(&format!("peft/{name}/trained"));
            match variant {
                Variant::ByLayer => {}
                Variant::ByTarget => adapter.tensors.sort_by_key(|t| (t.target as usize, t.layer)),
                Variant::Uneven => {
                    let first = adapter.tensors.iter().position(|t| t.layer == 0).expect("layer 0 adapted");
                    adapter.tensors.remove(first);
                }
            }
            let mut keys: Vec<(usize, usize, usize)> = adapter.tensors.iter().enumerate().map(|(i, t)| (t.target as usize, t.layer, i)).collect();
            keys.sort();
            let mut mdl = model(ctx, &m);
            mdl.set_adapter(ctx, Some(adapter), "trained").unwrap();
            let mut pass = TrainPass::new(ctx, &mdl, batch.len(), false).unwrap();
            ctx.profile_begin();
            pollster::block_on(pass.forward_backward(ctx, &mdl, &batch, 0.1, Dropout { p: 0.2, seed: 3 }, false)).unwrap();
            pollster::block_on(pass.forward_backward(ctx, &mdl, &batch, 0.1, Dropout::OFF, true)).unwrap();
            let launches = pollster::block_on(ctx.profile_end()).unwrap().dispatches;
            let values = keys.iter().flat_map(|k| [&pass.grads[k.2].0, &pass.grads[k.2].1]).flat_map(|b| pollster::block_on(ctx.read_f32(b)).unwrap()).collect();
            (values, launches)
        };
        // (dropout's seeds follow the adapter's order, so each order has its own reference)
        for (variant, reference) in [(Variant::ByLayer, None), (Variant::ByTarget, Some(Variant::ByLayer)), (Variant::Uneven, None)] {
            let want: Vec<f64> = grads(plain, variant).0.iter().map(|&x| x as f64).collect();
            let (got, launches) = grads(&tiled, variant);
            assert_close(&format!("{name}: gradients of the adapter {variant:?}, against lavapipe's kernels"), &got, &want, 1e-6, 1e-3);
            eprintln!("{name}, {} tokens, two backwards of the adapter {variant:?}: {launches} launches", batch.len());
            if let Some(reference) = reference {
                assert_eq!(launches, grads(&tiled, reference).1, "{name}: the adapter {variant:?} takes other launches than {reference:?}");
            }
        }
        // in parts of 64 steps (HEARTH_SPLIT_MIN_STEPS=64) instead of 256: more of them, the
        // same gradients
        let short = hearth_tests::own_gpu().unwrap().with_kernel_paths(KernelPaths::Gpu).with_tile_choice(TileChoice { split_min_steps: Some(64), ..Default::default() });
        let parts = (weight_grad_splits(&tiled, batch.len()), weight_grad_splits(&short, batch.len()));
        assert_eq!(parts, (Some(batch.len() / 256), Some(batch.len() / 64)), "{name}: the parts of {} tokens", batch.len());
        let want: Vec<f64> = grads(plain, Variant::ByLayer).0.iter().map(|&x| x as f64).collect();
        assert_close(&format!("{name}: gradients in parts of 64 steps"), &grads(&short, Variant::ByLayer).0, &want, 1e-6, 1e-3);
        // the thin tiles' own split (HEARTH_THIN_SPLIT=1024,16, or as tuned) takes the weight
        // gradients' parts down to 16 steps, 64 parts at most: the same gradients
        let thin = hearth_tests::own_gpu().unwrap().with_kernel_paths(KernelPaths::Gpu).with_tile_choice(TileChoice { thin_split: Some((1024, 16)), ..Default::default() });
        let thin_parts = weight_grad_splits(&thin, batch.len());
        assert!(thin_parts == Some(weight_grad_parts(batch.len(), 16)) && thin_parts > parts.1, "{name}: the parts of {} tokens in the thin split: {thin_parts:?}", batch.len());
        assert_close(&format!("{name}: gradients in the thin split's parts"), &grads(&thin, Variant::ByLayer).0, &want, 1e-6, 1e-3);
        // each step's values loaded just before they are staged (HEARTH_TILE_PREFETCH=0, the
        // LoRA terms' too), and every output in tiles of 128, their f32 ones staging 16
        // reduction steps per iteration (HEARTH_TILE_STEPS=16), or 64 columns wide (HEARTH_TILE_COLUMNS=64,
        // loaded in turn and ahead): the same gradients
        for (side, steps, columns, prefetch) in [(None, None, None, false), (Some(128), Some(16), None, false), (Some(128), None, Some(64), false), (Some(128), Some(16), Some(64), true)] {
            let tiles = TileChoice { side, steps, columns, prefetch: Some(prefetch), ..Default::default() };
            let ctx = hearth_tests::own_gpu().unwrap().with_kernel_paths(KernelPaths::Gpu).with_tile_choice(tiles);
            assert_eq!(ctx.tile_steps(), steps.unwrap_or(8), "{name}: this adapter's workgroup memory holds 16 steps");
            assert_close(&format!("{name}: gradients in {tiles:?}"), &grads(&ctx, Variant::ByLayer).0, &want, 1e-6, 1e-3);
        }
        let (by_layer, uneven) = (grads(&tiled, Variant::ByLayer).1, grads(&tiled, Variant::Uneven).1);
        assert!(uneven > by_layer, "{name}: {uneven} launches with a sum per gradient, {by_layer} with the sums per layer");
    }
}
