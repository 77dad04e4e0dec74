//! LoRA adapters as GGUF, as llama.cpp's convert_lora_to_gguf.py writes them (llama-cli
//! --lora, Ollama's ADAPTER): general.type "adapter", adapter.type "lora",
//! adapter.lora.alpha, and per adapted weight `<its GGUF name>.lora_a` (A, (r, in)) and
//! `.lora_b` (B, (out, r)), f32. B's rows follow the base weight's: llama.cpp's q/k row order
//! for the llama family. llama.cpp scales by alpha / r, so an rsLoRA adapter is written with
//! alpha·√r.

use super::{Adapter, LoraConfig, LoraTensor, Target};
use crate::io::gguf::{GgmlType, Gguf, GgufValue};
use crate::io::gguf_export::{gguf_arch, permute_f32};
use crate::io::gguf_tensors::{gguf_name, permuted_heads};
use crate::io::gguf_write::{GgufWriter, MetaValue};
use crate::model::Config;
use crate::quant::kquants;
use crate::{Error, Result};

fn weight_name(layer: usize, target: Target, cfg: &Config) -> String {
    gguf_name(&format!("model.layers.{layer}.{}.weight", target.path()), cfg.arch).expect("every target has a GGUF name")
}

/// The adapter `a` for the model `cfg` as a GGUF file.
pub fn adapter_gguf_bytes(a: &Adapter, cfg: &Config) -> Result<Vec<u8>> {
    // llama.cpp's one alpha for every tensor: scale·r must agree
    let alpha = a.tensors.first().map_or(a.cfg.alpha, |t| t.scale * t.rank as f32);
    if let Some(t) = a.tensors.iter().find(|t| (t.scale * t.rank as f32 - alpha).abs() > 1e-4 * alpha.abs()) {
        return Err(Error::unsupported("the adapter", format!("as GGUF: {} has scale·r {} where the others have {alpha}; llama.cpp keeps one alpha", t.peft_prefix(), t.scale * t.rank as f32)));
    }
    let mut g = GgufWriter::default();
    g.set("general.architecture", MetaValue::Str(gguf_arch(cfg.arch).into()));
    g.set("general.type", MetaValue::Str("adapter".into()));
    g.set("adapter.type", MetaValue::Str("lora".into()));
    g.set("adapter.lora.alpha", MetaValue::F32(alpha));
    for t in &a.tensors {
        let base = weight_name(t.layer, t.target, cfg);
        let b = match permuted_heads(t.target, cfg) {
            Some(heads) => permute_f32(&t.b, t.d_out, heads),
            None => t.b.clone(),
        };
        g.tensor(format!("{base}.lora_a"), vec![t.d_in, t.rank], GgmlType::F32, bytemuck::cast_slice(&t.a).to_vec());
        g.tensor(format!("{base}.lora_b"), vec![t.rank, t.d_out], GgmlType::F32, bytemuck::cast_slice(&b).to_vec());
    }
    Ok(g.to_bytes())
}

/// An adapter GGUF (`file` names it in errors) for the model `cfg`.
pub fn read_gguf_adapter(bytes: &[u8], file: &str, cfg: &Config) -> Result<Adapter> {
    let g = Gguf::parse(bytes, file)?;
    let text = |k: &str| g.get(k).and_then(GgufValue::as_str);
    if text("general.type") != Some("adapter") || text("adapter.type") != Some("lora") {
        return Err(Error::bad_file(file, "is not a LoRA adapter (general.type \"adapter\", adapter.type \"lora\")"));
    }
    let arch = gguf_arch(cfg.arch);
    if text("general.architecture") != Some(arch) {
        return Err(Error::bad_file(file, format!("is an adapter for {:?} models; this model is {arch}", text("general.architecture").unwrap_or("?"))));
    }
    let alpha = g.get("adapter.lora.alpha").and_then(GgufValue::as_f64).ok_or_else(|| Error::bad_file(file, "metadata adapter.lora.alpha is missing"))? as f32;
    let values = |name: &str| -> Result<(Vec<f32>, Vec<usize>)> {
        let t = g.tensor(name).ok_or_else(|| Error::bad_file(file, format!("tensor {name} is missing")))?;
        let data = match t.ty {
            GgmlType::F32 => bytemuck::pod_collect_to_vec(&g.data(t)?),
            GgmlType::F16 => kquants::dequantize_f16(&g.data(t)?),
            GgmlType::Bf16 => kquants::dequantize_bf16(&g.data(t)?),
            other => return Err(Error::bad_file(file, format!("tensor {name} is {other:?}; Hearth reads f32, f16 or bf16 adapters"))),
        };
        Ok((data, t.dims.clone()))
    };
    let mut tensors = Vec::new();
    for layer in 0..cfg.n_layers {
        for &target in &Target::EVERY {
            if !target.in_model(cfg) {
                continue;
            }
            let base = weight_name(layer, target, cfg);
            if g.tensor(&format!("{base}.lora_a")).is_none() {
                continue;
            }
            let (a, a_dims) = values(&format!("{base}.lora_a"))?;
            let (b, b_dims) = values(&format!("{base}.lora_b"))?;
            let (d_in, rank, d_out) = (a_dims[0], a_dims.get(1).copied().unwrap_or(1), b_dims.get(1).copied().unwrap_or(1));
            if b_dims[0] != rank {
                return Err(Error::bad_file(file, format!("{base}.lora_b has rank {} where lora_a has {rank}", b_dims[0])));
            }
            let b = match permuted_heads(target, cfg) {
                Some(heads) => bytemuck::pod_collect_to_vec(&crate::io::gguf_tensors::unpermute_rows(bytemuck::cast_slice(&b), d_out, heads)),
                None => b,
            };
            tensors.push(LoraTensor { layer, target, rank, d_in, d_out, scale: alpha / rank as f32, a, b });
        }
    }
    if tensors.is_empty() {
        return Err(Error::bad_file(file, format!("holds no LoRA tensors for this {arch} model's layers")));
    }
    let r = tensors.iter().map(|t| t.rank).max().unwrap_or(0);
    let mut targets: Vec<Target> = tensors.iter().map(|t| t.target).collect();
    targets.sort();
    targets.dedup();
    let adapter = Adapter { cfg: LoraConfig { r, alpha, rslora: false, dropout: 0.0, targets }, tensors };
    adapter.check_against(cfg, file)?;
    Ok(adapter)
}
