//! Writes a model as an HF folder (config.json, model.safetensors, tokenizer.json,
//! tokenizer_config.json) that transformers loads: `hearth export`, and later `merge`.

use half::{bf16, f16};
use safetensors::Dtype;
use serde_json::json;

use crate::model::weights::HostWeights;
use crate::model::{Arch, Config, Tokenizer};
use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportDtype {
    F32,
    F16,
    Bf16,
}

impl ExportDtype {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "f32" | "float32" => Ok(ExportDtype::F32),
            "f16" | "float16" => Ok(ExportDtype::F16),
            "bf16" | "bfloat16" => Ok(ExportDtype::Bf16),
            other => Err(Error::invalid_setting("dtype", format!("unknown dtype \"{other}\" (expected f32, f16 or bf16)"))),
        }
    }

    fn torch_name(self) -> &'static str {
        match self {
            ExportDtype::F32 => "float32",
            ExportDtype::F16 => "float16",
            ExportDtype::Bf16 => "bfloat16",
        }
    }
}

pub fn config_json(cfg: &Config, tok: &Tokenizer, dtype: ExportDtype) -> serde_json::Value {
    let mut config = json!({
        "architectures": [cfg.arch.hf_class()],
        "model_type": cfg.arch.name(),
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_size,
        "hidden_act": cfg.activation.name(),
        "rope_theta": cfg.rope_theta,
        "rope_scaling": (cfg.rope_scaling.factor > 0.0).then(|| json!({
            "rope_type": "llama3",
            "factor": cfg.rope_scaling.factor,
            "low_freq_factor": cfg.rope_scaling.low_freq_factor,
            "high_freq_factor": cfg.rope_scaling.high_freq_factor,
            "original_max_position_embeddings": cfg.rope_scaling.original_max_position,
        })),
        "rms_norm_eps": cfg.rms_norm_eps,
        "tie_word_embeddings": cfg.tie_embeddings,
        "attention_bias": cfg.qkv_bias,
        "max_position_embeddings": cfg.max_seq_len,
        "bos_token_id": tok.bos_id,
        "eos_token_id": tok.eos_ids.first(),
        // explicit, also when none: SmolLM3's config otherwise defaults to its own id 128004
        "pad_token_id": tok.pad_id,
        "torch_dtype": dtype.torch_name(),
    });
    if cfg.rotary_dims != cfg.head_size {
        config["partial_rotary_factor"] = json!(cfg.rotary_dims as f64 / cfg.head_size as f64);
    }
    if let Some(l) = &cfg.longrope {
        config["rope_scaling"] = l.hf.clone();
        config["original_max_position_embeddings"] = json!(l.original_max_position);
    }
    if let (Arch::Phi3, Some(local)) = (cfg.arch, &cfg.local_attention) {
        config["sliding_window"] = json!(local.window);
    }
    if cfg.arch == Arch::SmolLM3 {
        config["no_rope_layers"] = json!((0..cfg.n_layers).map(|i| u8::from(cfg.uses_rope(i))).collect::<Vec<_>>());
    }
    if let (Arch::Gemma3, Some(local)) = (cfg.arch, &cfg.local_attention) {
        let kind = |i: usize| if local.layers.contains(&i) { "sliding_attention" } else { "full_attention" };
        config["layer_types"] = json!((0..cfg.n_layers).map(kind).collect::<Vec<_>>());
        config["sliding_window"] = json!(local.window);
        config["rope_theta"] = serde_json::Value::Null;
        config["rope_parameters"] = json!({
            "full_attention": {"rope_type": "default", "rope_theta": cfg.rope_theta},
            "sliding_attention": {"rope_type": "default", "rope_theta": local.rope_theta.unwrap_or(cfg.rope_theta)},
        });
        config["hidden_activation"] = json!(cfg.activation.name());
        config["query_pre_attn_scalar"] = json!((1.0 / (cfg.attn_scale * cfg.attn_scale)).round() as u64);
    }
    config
}

pub fn tokenizer_config_json(tok: &Tokenizer) -> serde_json::Value {
    json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": tok.bos_token,
        "eos_token": tok.eos_token,
        "pad_token": tok.pad_id.and_then(|i| tok.token(i)),
        "chat_template": tok.chat_template,
        "clean_up_tokenization_spaces": false,
    })
}

/// The weights under HF's names as one safetensors file in `dtype`.
pub fn safetensors_bytes(cfg: &Config, w: &HostWeights, dtype: ExportDtype) -> Result<Vec<u8>> {
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mut push = |name: String, shape: Vec<usize>, data: Vec<f32>| tensors.push((name, shape, data));
    push("model.embed_tokens.weight".into(), vec![w.embed.rows, w.embed.cols], w.embed.to_f32());
    if let Some(h) = &w.lm_head {
        push("lm_head.weight".into(), vec![h.rows, h.cols], h.to_f32());
    }
    // Gemma's norms are held as 1 + w (weights.rs); transformers stores w
    let norm = |w: &Vec<f32>| if cfg.arch == Arch::Gemma3 { w.iter().map(|x| x - 1.0).collect() } else { w.clone() };
    push("model.norm.weight".into(), vec![cfg.hidden_size], norm(&w.final_norm));
    for (i, l) in w.layers.iter().enumerate() {
        let p = format!("model.layers.{i}");
        push(format!("{p}.input_layernorm.weight"), vec![cfg.hidden_size], norm(&l.attn_norm));
        let mlp_norm = if cfg.post_norms { "pre_feedforward_layernorm" } else { "post_attention_layernorm" };
        push(format!("{p}.{mlp_norm}.weight"), vec![cfg.hidden_size], norm(&l.ffn_norm));
        for (post, name) in [(&l.post_attn_norm, "post_attention_layernorm"), (&l.post_ffn_norm, "post_feedforward_layernorm")] {
            if let Some(w) = post {
                push(format!("{p}.{name}.weight"), vec![w.len()], norm(w));
            }
        }
        if cfg.fused {
            // Phi-3: q, k, v and gate, up stored as one weight each, rows in that order
            for (name, rows, data) in l.fused_weights() {
                push(format!("{p}.{name}.weight"), vec![rows, cfg.hidden_size], data);
            }
            for (m, name) in [(&l.o, "self_attn.o_proj"), (&l.down, "mlp.down_proj")] {
                push(format!("{p}.{name}.weight"), vec![m.rows, m.cols], m.to_f32());
            }
        } else {
            for (m, name) in [(&l.q, "self_attn.q_proj"), (&l.k, "self_attn.k_proj"), (&l.v, "self_attn.v_proj"), (&l.o, "self_attn.o_proj"), (&l.gate, "mlp.gate_proj"), (&l.up, "mlp.up_proj"), (&l.down, "mlp.down_proj")] {
                push(format!("{p}.{name}.weight"), vec![m.rows, m.cols], m.to_f32());
            }
        }
        for (head_norm, name) in [(&l.q_norm, "q_norm"), (&l.k_norm, "k_norm")] {
            if let Some(w) = head_norm {
                push(format!("{p}.self_attn.{name}.weight"), vec![w.len()], norm(w));
            }
        }
        for (b, name) in [(&l.q_bias, "q_proj"), (&l.k_bias, "k_proj"), (&l.v_bias, "v_proj")] {
            if let Some(b) = b {
                push(format!("{p}.self_attn.{name}.bias"), vec![b.len()], b.clone());
            }
        }
    }
    write_tensors(&tensors, dtype)
}

/// f32 values as little-endian `dtype` bytes (safetensors and GGUF alike).
pub(crate) fn encode(data: &[f32], dtype: ExportDtype) -> Vec<u8> {
    match dtype {
        ExportDtype::F32 => bytemuck::cast_slice(data).to_vec(),
        ExportDtype::F16 => data.iter().flat_map(|&x| f16::from_f32(x).to_le_bytes()).collect(),
        ExportDtype::Bf16 => data.iter().flat_map(|&x| bf16::from_f32(x).to_le_bytes()).collect(),
    }
}

/// Serializes (name, shape, f32 data) as safetensors in `dtype`.
pub fn write_tensors(tensors: &[(String, Vec<usize>, Vec<f32>)], dtype: ExportDtype) -> Result<Vec<u8>> {
    let encoded: Vec<Vec<u8>> = tensors.iter().map(|(_, _, d)| encode(d, dtype)).collect();
    let st_dtype = match dtype {
        ExportDtype::F32 => Dtype::F32,
        ExportDtype::F16 => Dtype::F16,
        ExportDtype::Bf16 => Dtype::BF16,
    };
    let views = tensors
        .iter()
        .zip(&encoded)
        .map(|((name, shape, _), bytes)| {
            safetensors::tensor::TensorView::new(st_dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::Shape(format!("tensor {name}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize(views, Some(meta)).map_err(|e| Error::Shape(format!("writing safetensors: {e}")))
}

/// Every file of the folder as (name, bytes).
pub fn hf_folder(cfg: &Config, w: &HostWeights, tok: &Tokenizer, dtype: ExportDtype) -> Result<Vec<(String, Vec<u8>)>> {
    let pretty = |v: serde_json::Value| serde_json::to_vec_pretty(&v).expect("json");
    Ok(vec![
        ("config.json".into(), pretty(config_json(cfg, tok, dtype))),
        ("tokenizer.json".into(), tok.to_json()?.into_bytes()),
        ("tokenizer_config.json".into(), pretty(tokenizer_config_json(tok))),
        ("model.safetensors".into(), safetensors_bytes(cfg, w, dtype)?),
    ])
}
