//! Models written as GGUF (io/gguf_export.rs), checked against what llama.cpp's converter
//! writes and read back:
//! - the tiny Qwen3 as Hearth writes it holds the same tensors (names, shapes, types, bytes)
//!   and metadata as tests/fixtures/tiny-qwen3.gguf, written by the gguf package the way
//!   convert_hf_to_gguf.py does (tests/reference/tiny_gguf.py);
//! - every family's GGUF, loaded back, gives transformers' logits (the tiny fixtures'
//!   reference.json; f32 within tests/tiny_models.rs's 2e-4 + 1e-4·|x|, q8_0 within 15 % of
//!   the largest logit: 8-bit noise, which Gemma's √hidden embedding scale multiplies);
//! - Q8_0, Q4_0 and Q4_1 blocks are byte for byte the gguf package's (llama.cpp's reference
//!   rounding; tests/reference/gguf_quants.py);
//! - SentencePiece-style tokenizers (Mistral's) read back with the HF tokenizer's ids;
//! - what llama.cpp would compute otherwise is refused by name;
//! - adapters written as LoRA GGUF (llama.cpp's layout) read back the same.
//!
//! tests/llama_cpp/run.sh loads these files with llama.cpp itself.

use hearth_core::io::gguf::Gguf;
use hearth_core::io::gguf_export::{gguf_bytes, GgufDtype};
use hearth_core::io::load::{load_gguf, load_hf_folder};
use hearth_core::model::{Model, ModelOptions};
use hearth_core::quant::{QuantFormat, QuantTensor};
use hearth_tests::{assert_close, fixture, with_gpu, DirFiles};
use serde_json::Value;

fn export(name: &str, dtype: GgufDtype) -> Vec<u8> {
    let m = load_hf_folder(&DirFiles(fixture(name)), None).unwrap();
    gguf_bytes(&m.cfg, &m.weights, &m.tokenizer, dtype, name).unwrap()
}

#[test]
fn tiny_qwen3_is_written_as_the_converter_writes_it() {
    let ours = export("tiny-qwen3", GgufDtype::F32);
    let theirs = std::fs::read(fixture("tiny-qwen3.gguf")).unwrap();
    let (a, b) = (Gguf::parse(&ours, "ours").unwrap(), Gguf::parse(&theirs, "tiny-qwen3.gguf").unwrap());
    let names = |g: &Gguf| {
        let mut v: Vec<String> = g.tensors.iter().map(|t| t.name.clone()).collect();
        v.sort();
        v
    };
    assert_eq!(names(&a), names(&b), "tensor names");
    for t in &b.tensors {
        let o = a.tensor(&t.name).unwrap();
        assert_eq!((&o.dims, o.ty), (&t.dims, t.ty), "{}: shape and type", t.name);
        assert!(a.data(o).unwrap() == b.data(t).unwrap(), "{}: data", t.name);
    }
    for (key, value) in &b.metadata {
        if key.starts_with("general.") {
            continue;
        }
        assert_eq!(a.get(key), Some(value), "metadata {key}");
    }
}

#[test]
fn every_family_reads_back_with_transformers_logits() {
    with_gpu!(ctx => {
        let families = ["tiny-llama", "tiny-llama3", "tiny-qwen2", "tiny-qwen3", "tiny-smollm3", "tiny-gemma3-p6", "tiny-phi3", "tiny-mistral"];
        for name in families {
            let r: Value = serde_json::from_str(&std::fs::read_to_string(fixture(name).join("reference.json")).unwrap()).unwrap();
            let ids: Vec<u32> = r["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
            let want: Vec<f64> = r["logits"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            for dtype in [GgufDtype::F32, GgufDtype::Q8_0] {
                let file = format!("{name} as {dtype:?} GGUF");
                let m = load_gguf(&export(name, dtype), &file, None).unwrap();
                assert_eq!(m.tokenizer.encode(r["text"].as_str().unwrap(), true).unwrap(), ids, "{file}: token ids");
                let mut model = Model::new(ctx, &m.cfg, m.weights, ModelOptions { chunk: 8, max_seq: 64, max_binding: None }).unwrap();
                let got = pollster::block_on(model.logits(ctx, &ids)).unwrap();
                if dtype == GgufDtype::F32 {
                    assert_close(&format!("{file} logits"), &got, &want, 2e-4, 1e-4);
                } else {
                    // 8-bit weights (the embedding too, which Gemma scales by √hidden): within
                    // 15 % of the largest logit
                    let top = want.iter().fold(0f64, |m, x| m.max(x.abs()));
                    let worst = got.iter().zip(&want).fold(0f64, |m, (g, w)| m.max((*g as f64 - w).abs()));
                    assert!(worst <= 0.15 * top, "{file}: logits differ by {worst} (largest logit {top})");
                }
            }
        }
    });
}

#[test]
fn block_formats_match_the_gguf_packages_quantizer() {
    let r: Value = serde_json::from_str(&std::fs::read_to_string(fixture("gguf-quants.json")).unwrap()).unwrap();
    let data: Vec<f32> = r["data"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    let (rows, cols) = (r["rows"].as_u64().unwrap() as usize, r["cols"].as_u64().unwrap() as usize);
    for (name, format) in [("q8_0", QuantFormat::Q8_0), ("q4_0", QuantFormat::Q4_0), ("q4_1", QuantFormat::Q4_1)] {
        let hex: String = QuantTensor::quantize(format, &data, rows, cols).unwrap().q.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, r[name].as_str().unwrap(), "{name} blocks");
    }
}

#[test]
fn what_llama_cpp_would_compute_otherwise_is_refused() {
    let refused = |name: &str| {
        let m = load_hf_folder(&DirFiles(fixture(name)), None).unwrap();
        gguf_bytes(&m.cfg, &m.weights, &m.tokenizer, GgufDtype::F16, name).unwrap_err().to_string()
    };
    // layers 0 and 2 windowed: llama.cpp's gemma3 takes every 6th layer as the global one
    assert!(refused("tiny-gemma3").contains("every 6th layer global"));
}

/// A SentencePiece-style tokenizer (Mistral's: BPE with byte fallback, "▁" for spaces) is
/// written as llama.cpp's "llama" model, with scores that order its merges; read back, it
/// gives the HF tokenizer's ids for text with spaces in a row, byte fallbacks and CJK. (Not
/// for a text that starts with a space: HF's Metaspace then adds no "▁" in front, where
/// SentencePiece and llama.cpp do; nor after a special token written in the text, where
/// llama.cpp adds one too.)
#[test]
fn sentencepiece_tokenizers_read_back_with_the_same_ids() {
    let hf = load_hf_folder(&DirFiles(fixture("tiny-mistral")), None).unwrap();
    let g = load_gguf(&export("tiny-mistral", GgufDtype::F16), "tiny-mistral.gguf", None).unwrap();
    for text in ["Hello world!", "two  spaces,   then\nnewlines\n\n", "你好，世界。Grüße aus Köln 🙂 — 12345"] {
        for special in [false, true] {
            assert_eq!(g.tokenizer.encode(text, special).unwrap(), hf.tokenizer.encode(text, special).unwrap(), "{text:?} (special {special})");
        }
        let ids = hf.tokenizer.encode(text, false).unwrap();
        assert_eq!(g.tokenizer.decode(&ids, false).unwrap(), hf.tokenizer.decode(&ids, false).unwrap(), "{text:?} decoded");
    }
    let bytes = export("tiny-mistral", GgufDtype::F16);
    let file = Gguf::parse(&bytes, "tiny-mistral.gguf").unwrap();
    assert_eq!(file.get("tokenizer.ggml.model").and_then(|v| v.as_str()), Some("llama"));
    assert_eq!(file.get("tokenizer.ggml.add_space_prefix").and_then(|v| v.as_bool()), Some(true));
}

/// An adapter as a LoRA GGUF (llama.cpp's convert_lora_to_gguf layout) reads back as the same
/// adapter: llama's q/k rows of B reordered and back, Phi-3's fused layers, the scale as
/// alpha / r.
#[test]
fn adapters_as_gguf_read_back_the_same() {
    use hearth_core::lora::gguf::{adapter_gguf_bytes, read_gguf_adapter};
    use hearth_core::lora::peft;
    for name in ["tiny-llama", "tiny-qwen3", "tiny-phi3"] {
        let m = load_hf_folder(&DirFiles(fixture(name)), None).unwrap();
        let dir = fixture(&format!("peft/{name}/trained"));
        let cfg_text = std::fs::read_to_string(dir.join(peft::CONFIG_FILE)).unwrap();
        let adapter = peft::read(&cfg_text, &std::fs::read(dir.join(peft::WEIGHTS_FILE)).unwrap(), name).unwrap();
        let bytes = adapter_gguf_bytes(&adapter, &m.cfg).unwrap();
        let back = read_gguf_adapter(&bytes, "adapter.gguf", &m.cfg).unwrap();
        assert_eq!(back.tensors.len(), adapter.tensors.len(), "{name}");
        for (a, b) in adapter.tensors.iter().zip(&back.tensors) {
            assert_eq!((a.layer, a.target, a.rank, a.d_in, a.d_out), (b.layer, b.target, b.rank, b.d_in, b.d_out), "{name}");
            assert_eq!((&a.a, &a.b), (&b.a, &b.b), "{name}: {}", a.peft_prefix());
            assert!((a.scale - b.scale).abs() < 1e-6, "{name}: scale");
        }
        // made for another model: refused by name
        let other = load_hf_folder(&DirFiles(fixture(if name == "tiny-qwen3" { "tiny-llama" } else { "tiny-qwen3" })), None).unwrap();
        assert!(read_gguf_adapter(&bytes, "adapter.gguf", &other.cfg).is_err(), "{name}: for another model");
    }
}
