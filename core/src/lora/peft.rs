//! PEFT's adapter files: adapter_config.json and adapter_model.safetensors with keys
//! `base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight` (A is (r, in), B is
//! (out, r), as torch's nn.Linear stores them). Reads any LoRA adapter PEFT saved for a
//! llama/qwen2/mistral model, rank_pattern and alpha_pattern included.

use std::collections::BTreeMap;

use safetensors::{Dtype, SafeTensors};
use serde_json::{json, Value};

use super::{Adapter, LoraConfig, LoraTensor, Target};
use crate::io::hf_export::{write_tensors, ExportDtype};
use crate::quant::kquants;
use crate::{Error, Result};

pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// adapter_config.json as PEFT writes it for a LoRA on a causal LM.
pub fn config_json(a: &Adapter, base_model: &str) -> Value {
    let targets: Vec<&str> = a.cfg.targets.iter().map(|t| t.name()).collect();
    json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": a.cfg.r,
        "lora_alpha": a.cfg.alpha,
        "lora_dropout": a.cfg.dropout,
        "use_rslora": a.cfg.rslora,
        "target_modules": targets,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "modules_to_save": null,
        "layers_to_transform": null,
        "layers_pattern": null,
        "rank_pattern": {},
        "alpha_pattern": {},
        "use_dora": false,
        "revision": null,
    })
}

/// adapter_model.safetensors (f32).
pub fn weights_bytes(a: &Adapter) -> Result<Vec<u8>> {
    let mut tensors = Vec::with_capacity(2 * a.tensors.len());
    for t in &a.tensors {
        let p = t.peft_prefix();
        tensors.push((format!("{p}.lora_A.weight"), vec![t.rank, t.d_in], t.a.clone()));
        tensors.push((format!("{p}.lora_B.weight"), vec![t.d_out, t.rank], t.b.clone()));
    }
    write_tensors(&tensors, ExportDtype::F32)
}

/// The adapter's two files as (name, bytes): adapter_config.json, adapter_model.safetensors.
pub fn files(a: &Adapter, base_model: &str) -> Result<Vec<(String, Vec<u8>)>> {
    let config = serde_json::to_vec_pretty(&config_json(a, base_model)).expect("json");
    Ok(vec![(CONFIG_FILE.into(), config), (WEIGHTS_FILE.into(), weights_bytes(a)?)])
}

/// Reads an adapter from the two files' contents; `dir` names the folder in errors.
pub fn read(config: &str, weights: &[u8], dir: &str) -> Result<Adapter> {
    let cfg_file = format!("{dir}/{CONFIG_FILE}");
    let c: Value = serde_json::from_str(config).map_err(|e| Error::bad_file(&cfg_file, format!("not valid JSON ({e})")).with_source(e))?;
    if let Some(kind) = c.get("peft_type").and_then(Value::as_str) {
        if kind != "LORA" {
            return Err(Error::unsupported(&cfg_file, format!("peft_type is \"{kind}\"; Hearth reads LoRA adapters (LORA)")));
        }
    }
    let flag = |key: &str| c.get(key).and_then(Value::as_bool).unwrap_or(false);
    for (key, what) in [("use_dora", "DoRA"), ("fan_in_fan_out", "fan_in_fan_out (Conv1D layers)")] {
        if flag(key) {
            return Err(Error::unsupported(&cfg_file, format!("{what} adapters are not supported")));
        }
    }
    if let Some(m) = c.get("modules_to_save").and_then(Value::as_array).filter(|m| !m.is_empty()) {
        return Err(Error::unsupported(&cfg_file, format!("modules_to_save {m:?} (fully trained modules) are not supported")));
    }
    let r = c.get("r").and_then(Value::as_u64).ok_or_else(|| Error::bad_file(&cfg_file, "field \"r\" is missing"))? as usize;
    let alpha = c.get("lora_alpha").and_then(Value::as_f64).unwrap_or(8.0) as f32;
    let rslora = flag("use_rslora");
    let dropout = c.get("lora_dropout").and_then(Value::as_f64).unwrap_or(0.0) as f32;
    let pattern = |key: &str| -> Vec<(String, f64)> {
        c.get(key).and_then(Value::as_object).map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_f64()?))).collect()).unwrap_or_default()
    };
    let (alpha_pattern, rank_pattern) = (pattern("alpha_pattern"), pattern("rank_pattern"));
    let find = |p: &[(String, f64)], module: &str| p.iter().find(|(k, _)| module.ends_with(k.as_str())).map(|&(_, v)| v);
    // A list of module names (not "all-linear" or a regex): each tensor must be one of them.
    let target_modules: Option<Vec<&str>> = c.get("target_modules").and_then(Value::as_array).map(|l| l.iter().filter_map(Value::as_str).collect());

    let file = format!("{dir}/{WEIGHTS_FILE}");
    let st = SafeTensors::deserialize(weights).map_err(|e| Error::bad_file(&file, format!("not a valid safetensors file ({e})")).with_source(e))?;
    // (layer, target) → (A, B) with their shapes
    type Pair = (Option<(Vec<usize>, Vec<f32>)>, Option<(Vec<usize>, Vec<f32>)>);
    let mut pairs: BTreeMap<(usize, Target), Pair> = BTreeMap::new();
    for (name, view) in st.tensors() {
        let (layer, target, is_a) = parse_key(&name).ok_or_else(|| {
            Error::bad_file(&file, format!("tensor {name} is not a LoRA A/B weight of a decoder layer (expected e.g. base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight)"))
        })?;
        let data = match view.dtype() {
            Dtype::F32 => bytemuck::pod_collect_to_vec(view.data()),
            Dtype::F16 => kquants::dequantize_f16(view.data()),
            Dtype::BF16 => kquants::dequantize_bf16(view.data()),
            other => return Err(Error::bad_file(&file, format!("tensor {name} has dtype {other:?}; expected F32, F16 or BF16"))),
        };
        if view.shape().len() != 2 {
            return Err(Error::Shape(format!("{file}: tensor {name} has shape {:?}, expected 2 dimensions", view.shape())));
        }
        let entry = pairs.entry((layer, target)).or_default();
        let slot = if is_a { &mut entry.0 } else { &mut entry.1 };
        *slot = Some((view.shape().to_vec(), data));
    }
    if pairs.is_empty() {
        return Err(Error::bad_file(&file, "holds no LoRA tensors"));
    }
    let mut tensors = Vec::with_capacity(pairs.len());
    for ((layer, target), (a, b)) in pairs {
        let prefix = format!("base_model.model.model.layers.{layer}.{}", target.path());
        let missing = |which: &str| Error::bad_file(&file, format!("{prefix}.lora_{which}.weight is missing"));
        let (a_shape, a) = a.ok_or_else(|| missing("A"))?;
        let (b_shape, b) = b.ok_or_else(|| missing("B"))?;
        let rank = a_shape[0];
        if b_shape[1] != rank {
            return Err(Error::Shape(format!(
                "{file}: {prefix}.lora_B.weight has shape {b_shape:?}, its lora_A has rank {rank}"
            )));
        }
        let module = format!("model.layers.{layer}.{}", target.path());
        // PEFT builds each layer from the config and refuses weights of another shape.
        let want = find(&rank_pattern, &module).map_or(r, |v| v as usize);
        if rank != want {
            return Err(Error::bad_file(&file, format!("{prefix}.lora_A.weight has rank {rank}, but {CONFIG_FILE} gives {module} r = {want}")));
        }
        // PEFT's rule: a listed name matches a module's full name or its last components.
        if let Some(names) = target_modules.as_ref().filter(|names| !names.iter().any(|n| module == *n || module.ends_with(&format!(".{n}")))) {
            return Err(Error::bad_file(&file, format!("{prefix} is a LoRA weight of {}, which {CONFIG_FILE}'s target_modules {names:?} does not name", target.name())));
        }
        let alpha = find(&alpha_pattern, &module).map_or(alpha, |v| v as f32);
        tensors.push(LoraTensor {
            layer,
            target,
            rank,
            d_in: a_shape[1],
            d_out: b_shape[0],
            scale: LoraConfig::scale_for(alpha, rank, rslora),
            a,
            b,
        });
    }
    let mut targets: Vec<Target> = tensors.iter().map(|t| t.target).collect();
    targets.sort();
    targets.dedup();
    Ok(Adapter { cfg: LoraConfig { r, alpha, rslora, dropout, targets }, tensors })
}

/// `base_model.model.model.layers.3.mlp.up_proj.lora_B.weight` (also with PEFT's in-memory
/// adapter name, `lora_B.default.weight`) → (3, Up, false).
fn parse_key(name: &str) -> Option<(usize, Target, bool)> {
    let rest = name.strip_prefix("base_model.model.model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer = layer.parse().ok()?;
    let (block, rest) = rest.split_once('.')?;
    let (module, rest) = rest.split_once('.')?;
    let target = Target::from_name(module).filter(|t| t.path().starts_with(block) && t.path().ends_with(module))?;
    let is_a = match rest {
        "lora_A.weight" | "lora_A.default.weight" => true,
        "lora_B.weight" | "lora_B.default.weight" => false,
        _ => return None,
    };
    Some((layer, target, is_a))
}
