//! Model files: k-quant dequantization against gguf-py, and bad input — truncated or corrupt
//! GGUF and safetensors files (whole or read by byte range), shapes that disagree with
//! config.json, unknown architectures and tensor types, empty prompts — each a clear error
//! naming the file or tensor.

use hearth_core::io::gguf::{GgmlType, Gguf};
use hearth_core::io::gguf_export::{gguf_bytes, GgufDtype};
use hearth_core::io::gguf_tensors::GgufSource;
use hearth_core::io::gguf_write::{GgufWriter, MetaValue};
use hearth_core::io::load::{load_gguf, load_hf_folder, shard_names, stream_gguf, stream_hf_folder, Files};
use hearth_core::io::safetensors::StreamedSafetensors;
use hearth_core::io::ReadRange;
use hearth_core::model::HostWeights;
use hearth_core::model::generate::{generate, GenerateParams};
use hearth_core::model::{Model, ModelOptions};
use hearth_core::quant::kquants;
use hearth_tests::{assert_close, fixture, with_gpu, DirFiles};
use serde_json::Value;

#[test]
fn kquants_match_gguf_py() {
    // exact: the same f16 scales times small integers
    let r: Value = serde_json::from_str(include_str!("../fixtures/kquants.json")).unwrap();
    type Dequantize = fn(&[u8], &mut [f32]);
    let cases: [(&str, Dequantize, usize); 3] =
        [("q4_k", kquants::dequantize_q4_k, 144), ("q5_k", kquants::dequantize_q5_k, 176), ("q6_k", kquants::dequantize_q6_k, 210)];
    for (name, f, bb) in cases {
        let bytes: Vec<u8> = r[name]["bytes"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u8).collect();
        let want: Vec<f64> = r[name]["values"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        let mut got = vec![0f32; want.len()];
        for (b, y) in bytes.chunks(bb).zip(got.chunks_mut(256)) {
            f(b, y);
        }
        assert_close(name, &got, &want, 1e-6, 1e-6);
    }
}

/// A folder with some files replaced.
struct Patched {
    base: DirFiles,
    replace: Vec<(&'static str, Vec<u8>)>,
}

impl Files for Patched {
    fn origin(&self) -> &str {
        self.base.origin()
    }

    fn read(&self, name: &str) -> hearth_core::Result<Option<Vec<u8>>> {
        match self.replace.iter().find(|(n, _)| *n == name) {
            Some((_, b)) => Ok(Some(b.clone())),
            None => self.base.read(name),
        }
    }
}

fn load_err(name: &str, replace: Vec<(&'static str, Vec<u8>)>) -> String {
    match load_hf_folder(&Patched { base: DirFiles(fixture(name)), replace }, None) {
        Ok(_) => panic!("loading the patched {name} should fail"),
        Err(e) => e.to_string(),
    }
}

fn patched_config(name: &str, key: &str, value: Value) -> Vec<u8> {
    let mut cfg: Value = serde_json::from_slice(&std::fs::read(fixture(name).join("config.json")).unwrap()).unwrap();
    cfg[key] = value;
    serde_json::to_vec(&cfg).unwrap()
}

#[test]
fn shapes_that_disagree_with_the_config_name_the_tensor() {
    let e = load_err("tiny-qwen2", vec![("config.json", patched_config("tiny-qwen2", "intermediate_size", 128.into()))]);
    assert!(e.contains("model.layers.0.mlp.gate_proj.weight") && e.contains("(96, 64)") && e.contains("(128, 64)"), "{e}");
}

#[test]
fn unknown_architecture_is_named() {
    let e = load_err("tiny-llama", vec![("config.json", patched_config("tiny-llama", "model_type", "gpt_neox".into()))]);
    assert!(e.contains("\"gpt_neox\" is not supported"), "{e}");
}

#[test]
fn truncated_safetensors_names_the_file() {
    let full = std::fs::read(fixture("tiny-qwen2").join("model.safetensors")).unwrap();
    let e = load_err("tiny-qwen2", vec![("model.safetensors", full[..full.len() / 2].to_vec())]);
    assert!(e.contains("model.safetensors") && e.contains("not a valid safetensors file"), "{e}");
    let e = load_err("tiny-qwen2", vec![("model.safetensors", b"\xff\xff\xff\xff\xff\xff\xff\x7f{".to_vec())]);
    assert!(e.contains("model.safetensors"), "{e}");
}

/// Byte ranges of a folder's files, as the web page reads them from browser storage.
impl ReadRange for Patched {
    fn len(&self, file: &str) -> hearth_core::Result<u64> {
        Ok(Files::read(self, file)?.map_or(0, |b| b.len() as u64))
    }

    fn read(&self, file: &str, start: u64, end: u64) -> hearth_core::Result<Vec<u8>> {
        Ok(Files::read(self, file)?.unwrap_or_default()[start as usize..end as usize].to_vec())
    }
}

/// The weights of `folder` read a tensor at a time, bf16 kept 16-bit when `halves`.
fn streamed(folder: &Patched, halves: bool) -> hearth_core::Result<HostWeights> {
    let config = Files::read(folder, "config.json")?.expect("config.json");
    let cfg = hearth_core::model::Config::from_hf_json(std::str::from_utf8(&config).unwrap(), "config.json")?;
    let src = StreamedSafetensors::new(folder.origin(), &shard_names(folder)?, folder, halves)?;
    HostWeights::load(&cfg, &src, None)
}

#[test]
fn streamed_safetensors_load_the_same_weights_and_refuse_truncated_files() {
    // the tiny Llama has three shards
    let folder = Patched { base: DirFiles(fixture("tiny-llama")), replace: Vec::new() };
    let whole = load_hf_folder(&folder, None).unwrap();
    assert_eq!(format!("{:?}", streamed(&folder, false).unwrap()), format!("{:?}", whole.weights));
    // layer by layer onto the GPU: the same logits as the model uploaded whole
    with_gpu!(ctx => {
        let opts = |_: &hearth_core::model::Config| ModelOptions { chunk: 64, max_seq: 64, max_binding: None };
        let mut on_gpu = stream_hf_folder(ctx, &folder, &folder, None, false, &opts).unwrap().model;
        let mut uploaded = Model::new(ctx, &whole.cfg, whole.weights.clone(), opts(&whole.cfg)).unwrap();
        let tokens = [1, 5, 9, 42, 7];
        let a = pollster::block_on(on_gpu.logits(ctx, &tokens)).unwrap();
        let b = pollster::block_on(uploaded.logits(ctx, &tokens)).unwrap();
        assert!(a == b, "streamed and uploaded models give different logits");
    });
    let full = std::fs::read(fixture("tiny-qwen2").join("model.safetensors")).unwrap();
    let cut = Patched { base: DirFiles(fixture("tiny-qwen2")), replace: vec![("model.safetensors", full[..full.len() - 10].to_vec())] };
    let e = streamed(&cut, false).expect_err("a truncated shard is refused").to_string();
    assert!(e.contains("model.safetensors") && e.contains("truncated"), "{e}");
}

/// One file read by byte range, as the web page reads a .gguf from browser storage; counts
/// the bytes read.
struct OneFile {
    bytes: Vec<u8>,
    read: std::cell::Cell<u64>,
}

impl OneFile {
    fn new(bytes: Vec<u8>) -> Self {
        OneFile { bytes, read: 0.into() }
    }
}

impl ReadRange for OneFile {
    fn len(&self, _: &str) -> hearth_core::Result<u64> {
        Ok(self.bytes.len() as u64)
    }

    fn read(&self, _: &str, start: u64, end: u64) -> hearth_core::Result<Vec<u8>> {
        self.read.set(self.read.get() + end - start);
        Ok(self.bytes[start as usize..end as usize].to_vec())
    }
}

#[test]
fn streamed_gguf_files_load_the_same_weights_and_refuse_truncated_files() {
    // permuted q/k and rope_freqs (Llama 3), fused qkv and LongRoPE (Phi-3), 1 + w norms (Gemma 3)
    for file in ["tiny-llama3.gguf", "tiny-phi3.gguf", "tiny-gemma3-p6.gguf", "tiny-qwen3.gguf"] {
        let bytes = std::fs::read(fixture(file)).unwrap();
        let whole = load_gguf(&bytes, file, None).unwrap();
        let r = OneFile::new(bytes);
        let g = Gguf::read(&r, "m.gguf", file).unwrap();
        assert_eq!(format!("{:?}", hearth_core::model::Config::from_gguf(&g, file).unwrap()), format!("{:?}", whole.cfg), "{file}");
        let weights = HostWeights::load(&whole.cfg, &GgufSource::new(&g, file, &whole.cfg, false), None).unwrap();
        assert_eq!(format!("{weights:?}"), format!("{:?}", whole.weights), "{file}");
    }
    // layer by layer onto the GPU: the same logits as the model uploaded whole
    with_gpu!(ctx => {
        let file = "tiny-llama3.gguf";
        let r = OneFile::new(std::fs::read(fixture(file)).unwrap());
        let whole = load_gguf(&r.bytes, file, None).unwrap();
        let opts = |_: &hearth_core::model::Config| ModelOptions { chunk: 64, max_seq: 64, max_binding: None };
        let mut on_gpu = stream_gguf(ctx, &r, "m.gguf", file, None, false, &opts).unwrap().model;
        let mut uploaded = Model::new(ctx, &whole.cfg, whole.weights.clone(), opts(&whole.cfg)).unwrap();
        let tokens = [1, 5, 9, 42, 7];
        let a = pollster::block_on(on_gpu.logits(ctx, &tokens)).unwrap();
        let b = pollster::block_on(uploaded.logits(ctx, &tokens)).unwrap();
        assert!(a == b, "streamed and uploaded models give different logits");
    });
    // a cut file is named when its header is read, before any tensor
    let bytes = std::fs::read(fixture("tiny-qwen3.gguf")).unwrap();
    let cut = OneFile::new(bytes[..bytes.len() - 10].to_vec());
    let e = Gguf::read(&cut, "m.gguf", "cut.gguf").err().expect("a truncated file is refused").to_string();
    assert!(e.contains("cut.gguf") && e.contains("truncated"), "{e}");
}

#[test]
fn a_gguf_header_longer_than_the_first_read_is_read_whole_and_the_tensors_are_not() {
    // a 20 MB vocabulary (a large tokenizer's is several MB) ahead of 16 MB of tensor data
    let mut w = GgufWriter::default();
    w.set("general.architecture", MetaValue::Str("llama".into()));
    w.set("tokenizer.ggml.tokens", MetaValue::Strs((0..1_000_000).map(|i| format!("token{i:012}")).collect()));
    w.tensor("token_embd.weight", vec![1024, 4096], GgmlType::F32, vec![7; 16 << 20]);
    let bytes = w.to_bytes();
    let r = OneFile::new(bytes.clone());
    let g = Gguf::read(&r, "m.gguf", "big.gguf").unwrap();
    let whole = Gguf::parse(&bytes, "big.gguf").unwrap();
    assert_eq!(g.metadata, whole.metadata);
    assert!(r.read.get() < bytes.len() as u64, "read {} of {} bytes for the header", r.read.get(), bytes.len());
    let t = g.tensor("token_embd.weight").unwrap();
    assert!(g.data(t).unwrap() == whole.data(t).unwrap());
}

#[test]
fn streamed_bf16_weights_stay_16_bit_with_the_same_values_from_safetensors_and_gguf() {
    use hearth_core::model::WeightFormat;
    use hearth_core::quant::QuantFormat;
    // the tiny Qwen2's weights are bf16
    let folder = Patched { base: DirFiles(fixture("tiny-qwen2")), replace: Vec::new() };
    let f32s = load_hf_folder(&folder, None).unwrap().weights;
    let halves = streamed(&folder, true).unwrap();
    let matrices = |w: &HostWeights| -> Vec<hearth_core::model::Matrix> {
        let mut m = vec![w.embed.clone()];
        for l in &w.layers {
            m.extend([&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down].map(|x| x.clone()));
        }
        m
    };
    // and the same model as a bf16 GGUF, read by range as the page reads it
    let m = load_hf_folder(&folder, None).unwrap();
    let bf16 = OneFile::new(gguf_bytes(&m.cfg, &m.weights, &m.tokenizer, GgufDtype::Bf16, "tiny-qwen2").unwrap());
    let g = Gguf::read(&bf16, "m.gguf", "tiny-qwen2.bf16.gguf").unwrap();
    let gguf_halves = HostWeights::load(&m.cfg, &GgufSource::new(&g, "tiny-qwen2.bf16.gguf", &m.cfg, true), None).unwrap();
    for halves in [halves, gguf_halves] {
        for (a, b) in matrices(&f32s).iter().zip(matrices(&halves)) {
            assert_eq!(a.format(), WeightFormat::F32, "{}", a.name);
            assert_eq!(b.format(), WeightFormat::Quant(QuantFormat::F16), "{} stays 16-bit", b.name);
            // exact in f16's normal range; below it (6.1e-5) f16's subnormals round to 2^-24
            for (x, y) in a.to_f32().iter().zip(b.to_f32()) {
                assert!(x == &y || (x.abs() < 6.2e-5 && (x - y).abs() <= 3.0e-8), "{}: {x} became {y}", a.name);
            }
        }
    }
}

#[test]
fn missing_files_are_named() {
    let e = match load_hf_folder(&DirFiles(fixture("no-such-model")), None) {
        Ok(_) => panic!("should fail"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("config.json is missing"), "{e}");
}

/// A GGUF file with the given metadata (string values) and one F32 tensor of `ty`.
fn gguf(kv: &[(&str, &str)], tensor_type: u32, dims: &[u64], data: usize) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    let s = |b: &mut Vec<u8>, x: &str| {
        b.extend((x.len() as u64).to_le_bytes());
        b.extend(x.as_bytes());
    };
    b.extend(3u32.to_le_bytes());
    b.extend(1u64.to_le_bytes());
    b.extend((kv.len() as u64).to_le_bytes());
    for (k, v) in kv {
        s(&mut b, k);
        b.extend(8u32.to_le_bytes());
        s(&mut b, v);
    }
    s(&mut b, "token_embd.weight");
    b.extend((dims.len() as u32).to_le_bytes());
    dims.iter().for_each(|d| b.extend(d.to_le_bytes()));
    b.extend(tensor_type.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    b.resize(b.len().next_multiple_of(32) + data, 0);
    b
}

#[test]
fn corrupt_gguf_files_give_clear_errors() {
    let err = |bytes: &[u8]| match Gguf::parse(bytes, "m.gguf") {
        Ok(_) => panic!("should fail"),
        Err(e) => e.to_string(),
    };
    let good = gguf(&[("general.architecture", "llama")], 0, &[32, 4], 512);
    assert!(Gguf::parse(&good, "m.gguf").is_ok());
    assert!(err(b"GGML....").contains("not a GGUF file"));
    assert!(err(&good[..good.len() - 1]).contains("truncated"), "{}", err(&good[..good.len() - 1]));
    assert!(err(&good[..40]).contains("m.gguf"));
    // a tensor count no file could hold: refused before any allocation
    let mut huge = good.clone();
    huge[8..16].copy_from_slice(&(1u64 << 60).to_le_bytes());
    assert!(err(&huge).contains("tensor count"), "{}", err(&huge));
    let q2k = gguf(&[("general.architecture", "llama")], 10, &[256, 4], 4 * 84);
    assert!(err(&q2k).contains("token_embd.weight has type Q2_K"), "{}", err(&q2k));
    let arch = gguf(&[("general.architecture", "gpt2")], 0, &[32, 4], 512);
    let e = match load_gguf(&arch, "m.gguf", None) {
        Ok(_) => panic!("should fail"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("m.gguf") && e.contains("\"gpt2\" is not supported"), "{e}");
}

#[test]
fn empty_prompt_is_an_error() {
    with_gpu!(ctx => {
        let m = load_hf_folder(&DirFiles(fixture("tiny-llama")), None).unwrap();
        let mut model = Model::new(ctx, &m.cfg, m.weights, ModelOptions { chunk: 8, max_seq: 32, max_binding: None }).unwrap();
        let e = pollster::block_on(generate(ctx, &mut model, &m.tokenizer, &[], &GenerateParams::default(), |_| {})).unwrap_err();
        assert!(e.to_string().contains("prompt is empty"), "{e}");
        let long: Vec<u32> = vec![5; 40];
        let e = pollster::block_on(model.logits(ctx, &long)).unwrap_err();
        // Core names the setting; each front end says how to raise it (the CLI: --ctx).
        assert!(matches!(e, hearth_core::Error::InvalidSetting { setting: "ctx", .. }), "{e:?}");
        assert!(e.to_string().contains("more than the 32 the KV cache was made for"), "{e}");
    });
}
