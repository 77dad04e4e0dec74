//! A model as one GGUF file, written as llama.cpp's convert_hf_to_gguf.py writes it for the
//! family: its architecture and tensor names (gguf_tensors.rs, read backwards), the q/k row
//! order its llama-family rope expects, Phi-3's fused layers, Gemma's norms as 1 + w, the
//! rope scaling as it stores it (rope_freqs.weight, rope_factors_*), the `<arch>.*` and
//! `tokenizer.ggml.*` metadata and the chat template. Linear weights and the embedding take
//! the chosen type (block formats quantized with llama.cpp's reference rounding); norms and
//! biases stay f32.

use serde_json::Value;

use super::gguf::GgmlType;
use super::gguf_tensors::{gguf_name, permute_rows, permuted_heads};
use super::gguf_write::{GgufWriter, MetaValue};
use super::hf_export::{encode, ExportDtype};
use crate::lora::Target;
use crate::model::config::Arch;
use crate::model::weights::{HostWeights, Matrix};
use crate::model::{Config, Tokenizer};
use crate::ops::cpu::rope_inv_freq;
use crate::quant::{QuantFormat, QuantTensor};
use crate::{Error, Result};

/// The tensor type of the linear weights and the embedding (`--dtype`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgufDtype {
    F32,
    F16,
    Bf16,
    Q8_0,
    Q4_0,
    Q4_1,
}

impl GgufDtype {
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "f32" => GgufDtype::F32,
            "f16" => GgufDtype::F16,
            "bf16" => GgufDtype::Bf16,
            "q8_0" => GgufDtype::Q8_0,
            "q4_0" => GgufDtype::Q4_0,
            "q4_1" => GgufDtype::Q4_1,
            other => return Err(Error::invalid_setting("dtype", format!("\"{other}\" for GGUF: expected f32, f16, bf16, q8_0, q4_0 or q4_1"))),
        })
    }

    /// llama.cpp's general.file_type (its LLAMA_FTYPE_*).
    fn file_type(self) -> u32 {
        match self {
            GgufDtype::F32 => 0,
            GgufDtype::F16 => 1,
            GgufDtype::Q4_0 => 2,
            GgufDtype::Q4_1 => 3,
            GgufDtype::Q8_0 => 7,
            GgufDtype::Bf16 => 32,
        }
    }
}

/// llama.cpp's architecture name: Mistral's converter writes it as llama.
pub(crate) fn gguf_arch(arch: Arch) -> &'static str {
    match arch {
        Arch::Llama | Arch::Mistral => "llama",
        Arch::Qwen2 => "qwen2",
        Arch::Qwen3 => "qwen3",
        Arch::SmolLM3 => "smollm3",
        Arch::Gemma3 => "gemma3",
        Arch::Phi3 => "phi3",
    }
}

/// The GGUF file of the model `cfg`, `w`, `tok`, named `name` (general.name).
pub fn gguf_bytes(cfg: &Config, w: &HostWeights, tok: &Tokenizer, dtype: GgufDtype, name: &str) -> Result<Vec<u8>> {
    check_llama_cpp_constants(cfg)?;
    let arch = gguf_arch(cfg.arch);
    let mut g = GgufWriter::default();
    let key = |k: &str| format!("{arch}.{k}");
    let u = |v: usize| MetaValue::U32(v as u32);
    g.set("general.architecture", MetaValue::Str(arch.into()));
    g.set("general.name", MetaValue::Str(name.into()));
    g.set("general.file_type", MetaValue::U32(dtype.file_type()));
    g.set(key("context_length"), u(cfg.max_seq_len));
    g.set(key("embedding_length"), u(cfg.hidden_size));
    g.set(key("block_count"), u(cfg.n_layers));
    g.set(key("feed_forward_length"), u(cfg.intermediate_size));
    g.set(key("attention.head_count"), u(cfg.n_heads));
    g.set(key("attention.head_count_kv"), u(cfg.n_kv_heads));
    g.set(key("attention.key_length"), u(cfg.head_size));
    g.set(key("attention.value_length"), u(cfg.head_size));
    g.set(key("attention.layer_norm_rms_epsilon"), MetaValue::F32(cfg.rms_norm_eps));
    g.set(key("rope.freq_base"), MetaValue::F32(cfg.rope_theta));
    g.set(key("rope.dimension_count"), u(cfg.rotary_dims));
    g.set(key("vocab_size"), u(cfg.vocab_size));
    let window = cfg.local_attention.as_ref().map(|l| l.window).or(cfg.sliding_window);
    if let Some(window) = window {
        g.set(key("attention.sliding_window"), u(window));
    }
    if let Some(l) = &cfg.longrope {
        g.set(key("rope.scaling.attn_factor"), MetaValue::F32(l.factors.mscale));
        g.set(key("rope.scaling.original_context_length"), u(l.original_max_position));
    }
    super::gguf_vocab::tokenizer_meta(&mut g, tok, cfg)?;

    let matrix = |g: &mut GgufWriter, gname: &str, m: &Matrix, data: Vec<f32>| put_matrix(g, gname, m.rows, m.cols, data, dtype);
    matrix(&mut g, "token_embd.weight", &w.embed, w.embed.to_f32())?;
    put_vector(&mut g, "output_norm.weight", &w.final_norm);
    if let Some(h) = &w.lm_head {
        matrix(&mut g, "output.weight", h, h.to_f32())?;
    }
    if cfg.rope_scaling.factor > 0.0 {
        // Llama 3's scaling as per-frequency divisors, as the converter writes it
        let half = cfg.rotary_dims / 2;
        let divisors: Vec<f32> = (0..half)
            .map(|j| (rope_inv_freq(j, cfg.rotary_dims, cfg.rope_theta as f64, &Default::default()) / rope_inv_freq(j, cfg.rotary_dims, cfg.rope_theta as f64, &cfg.rope_scaling)) as f32)
            .collect();
        put_vector(&mut g, "rope_freqs.weight", &divisors);
    }
    if let Some(l) = &cfg.longrope {
        for (kind, tensor) in [("long_factor", "rope_factors_long.weight"), ("short_factor", "rope_factors_short.weight")] {
            let f: Vec<f32> = l.hf.get(kind).and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_f64).map(|x| x as f32).collect()).unwrap_or_default();
            put_vector(&mut g, tensor, &f);
        }
    }
    for (i, l) in w.layers.iter().enumerate() {
        let p = format!("model.layers.{i}");
        let name = |hf: &str| gguf_name(&format!("{p}.{hf}"), cfg.arch).expect("every layer tensor has a GGUF name");
        put_vector(&mut g, &name("input_layernorm.weight"), &l.attn_norm);
        let mlp_norm = if cfg.post_norms { "pre_feedforward_layernorm.weight" } else { "post_attention_layernorm.weight" };
        put_vector(&mut g, &name(mlp_norm), &l.ffn_norm);
        for (v, hf) in [(&l.post_attn_norm, "post_attention_layernorm.weight"), (&l.post_ffn_norm, "post_feedforward_layernorm.weight"), (&l.q_norm, "self_attn.q_norm.weight"), (&l.k_norm, "self_attn.k_norm.weight")] {
            if let Some(v) = v {
                put_vector(&mut g, &name(hf), v);
            }
        }
        if cfg.fused {
            // Phi-3: q, k, v as one attn_qkv and gate, up as one ffn_up, rows in that order
            for (module, rows, data) in l.fused_weights() {
                put_matrix(&mut g, &name(&format!("{module}.weight")), rows, cfg.hidden_size, data, dtype)?;
            }
        } else {
            let qk = |m: &Matrix, t: Target| match permuted_heads(t, cfg) {
                Some(heads) => permute_f32(&m.to_f32(), m.rows, heads),
                None => m.to_f32(),
            };
            matrix(&mut g, &name("self_attn.q_proj.weight"), &l.q, qk(&l.q, Target::Q))?;
            matrix(&mut g, &name("self_attn.k_proj.weight"), &l.k, qk(&l.k, Target::K))?;
            matrix(&mut g, &name("self_attn.v_proj.weight"), &l.v, l.v.to_f32())?;
            matrix(&mut g, &name("mlp.gate_proj.weight"), &l.gate, l.gate.to_f32())?;
            matrix(&mut g, &name("mlp.up_proj.weight"), &l.up, l.up.to_f32())?;
        }
        matrix(&mut g, &name("self_attn.o_proj.weight"), &l.o, l.o.to_f32())?;
        matrix(&mut g, &name("mlp.down_proj.weight"), &l.down, l.down.to_f32())?;
        for (b, hf, t) in [(&l.q_bias, "self_attn.q_proj.bias", Target::Q), (&l.k_bias, "self_attn.k_proj.bias", Target::K), (&l.v_bias, "self_attn.v_proj.bias", Target::V)] {
            if let Some(b) = b {
                let b = match permuted_heads(t, cfg) {
                    Some(heads) => permute_f32(b, b.len(), heads),
                    None => b.clone(),
                };
                put_vector(&mut g, &name(hf), &b);
            }
        }
    }
    Ok(g.to_bytes())
}

/// What llama.cpp takes as fixed for a family but the model might set otherwise: refused, as
/// llama.cpp would compute other numbers.
fn check_llama_cpp_constants(cfg: &Config) -> Result<()> {
    let refuse = |what: String| Err(Error::unsupported("the model", format!("as GGUF: {what}")));
    match cfg.arch {
        Arch::SmolLM3 if cfg.nope_layers != (0..cfg.n_layers).filter(|i| (i + 1) % 4 == 0).collect::<Vec<_>>() => {
            refuse("llama.cpp's smollm3 leaves out rope on every 4th layer; this model has other NoPE layers".into())
        }
        Arch::Gemma3 => {
            let l = cfg.local_attention.as_ref();
            let pattern: Vec<usize> = (0..cfg.n_layers).filter(|i| (i + 1) % 6 != 0).collect();
            if l.map(|l| &l.layers) != Some(&pattern) || l.and_then(|l| l.rope_theta) != Some(10000.0) {
                return refuse("llama.cpp's gemma3 has every 6th layer global and rope theta 10000 on the others; this model differs".into());
            }
            if (cfg.attn_scale - 1.0 / (cfg.head_size as f32).sqrt()).abs() > 1e-7 {
                return refuse("llama.cpp's gemma3 scales attention by 1/√head_dim; this model's query_pre_attn_scalar differs".into());
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// llama.cpp's q/k row order (`permute_rows`) for f32 values.
pub(crate) fn permute_f32(v: &[f32], rows: usize, heads: usize) -> Vec<f32> {
    bytemuck::pod_collect_to_vec(&permute_rows(bytemuck::cast_slice(v), rows, heads))
}

fn put_vector(g: &mut GgufWriter, name: &str, v: &[f32]) {
    g.tensor(name, vec![v.len()], GgmlType::F32, bytemuck::cast_slice(v).to_vec());
}

/// A (rows, cols) matrix in `dtype`; block formats need cols a multiple of 32 and fall back
/// to f16 otherwise, as llama.cpp's converter does.
fn put_matrix(g: &mut GgufWriter, name: &str, rows: usize, cols: usize, data: Vec<f32>, dtype: GgufDtype) -> Result<()> {
    let quant = |f: QuantFormat| QuantTensor::quantize(f, &data, rows, cols).map(|t| t.q).map_err(|e| Error::Shape(format!("{name}: {e}")));
    let block = matches!(dtype, GgufDtype::Q8_0 | GgufDtype::Q4_0 | GgufDtype::Q4_1);
    let (ty, bytes) = match dtype {
        _ if block && !cols.is_multiple_of(32) => (GgmlType::F16, encode(&data, ExportDtype::F16)),
        GgufDtype::F32 => (GgmlType::F32, encode(&data, ExportDtype::F32)),
        GgufDtype::F16 => (GgmlType::F16, encode(&data, ExportDtype::F16)),
        GgufDtype::Bf16 => (GgmlType::Bf16, encode(&data, ExportDtype::Bf16)),
        GgufDtype::Q8_0 => (GgmlType::Q8_0, quant(QuantFormat::Q8_0)?),
        GgufDtype::Q4_0 => (GgmlType::Q4_0, quant(QuantFormat::Q4_0)?),
        GgufDtype::Q4_1 => (GgmlType::Q4_1, quant(QuantFormat::Q4_1)?),
    };
    g.tensor(name, vec![cols, rows], ty, bytes);
    Ok(())
}

