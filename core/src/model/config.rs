//! Config: the sizes of a decoder, read from an HF config.json or from GGUF metadata.

use serde::Deserialize;

use crate::io::gguf::{GgmlType, Gguf, GgufValue};
use crate::ops::rope::RopeScaling;
pub use crate::ops::swiglu::Activation;
use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Qwen2,
    Mistral,
    /// Qwen2's block without q/k/v biases, with q_norm and k_norm.
    Qwen3,
    /// Llama's block with no rope on the configured layers (NoPE).
    SmolLM3,
    /// Gemma 3's text models (270M, 1B): scaled embeddings, norms of (1 + w), post-norms,
    /// GeGLU, q/k norms, sliding-window layers with their own rope theta.
    Gemma3,
    /// Phi-3 / Phi-3.5 / Phi-4-mini: fused qkv_proj and gate_up_proj, partial rotary, LongRoPE.
    Phi3,
}

impl Arch {
    pub fn parse(name: &str, file: &str) -> Result<Self> {
        match name {
            "llama" | "LlamaForCausalLM" => Ok(Arch::Llama),
            "qwen2" | "Qwen2ForCausalLM" => Ok(Arch::Qwen2),
            "mistral" | "MistralForCausalLM" => Ok(Arch::Mistral),
            "qwen3" | "Qwen3ForCausalLM" => Ok(Arch::Qwen3),
            "smollm3" | "SmolLM3ForCausalLM" => Ok(Arch::SmolLM3),
            // "gemma3" is the GGUF architecture of the text model (in config.json it names the
            // multimodal model, refused in from_hf_json)
            "gemma3_text" | "Gemma3ForCausalLM" | "gemma3" => Ok(Arch::Gemma3),
            "phi3" | "Phi3ForCausalLM" => Ok(Arch::Phi3),
            other => Err(Error::unsupported(
                file,
                format!("architecture \"{other}\" is not supported (Hearth runs llama, qwen2, qwen3, mistral, smollm3, gemma3_text and phi3)"),
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Mistral => "mistral",
            Arch::Qwen3 => "qwen3",
            Arch::SmolLM3 => "smollm3",
            Arch::Gemma3 => "gemma3_text",
            Arch::Phi3 => "phi3",
        }
    }

    /// transformers' class for the architecture (config.json's `architectures`).
    pub fn hf_class(self) -> &'static str {
        match self {
            Arch::Llama => "LlamaForCausalLM",
            Arch::Qwen2 => "Qwen2ForCausalLM",
            Arch::Mistral => "MistralForCausalLM",
            Arch::Qwen3 => "Qwen3ForCausalLM",
            Arch::SmolLM3 => "SmolLM3ForCausalLM",
            Arch::Gemma3 => "Gemma3ForCausalLM",
            Arch::Phi3 => "Phi3ForCausalLM",
        }
    }

    /// Whether llama.cpp's converter permutes the q/k rows of this family (its rope pairs
    /// neighbouring dimensions where transformers pairs halves).
    pub fn gguf_permutes_qk(self) -> bool {
        matches!(self, Arch::Llama | Arch::Mistral | Arch::SmolLM3)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub arch: Arch,
    /// V
    pub vocab_size: usize,
    /// C
    pub hidden_size: usize,
    /// FF
    pub intermediate_size: usize,
    /// L
    pub n_layers: usize,
    /// NH
    pub n_heads: usize,
    /// NKV
    pub n_kv_heads: usize,
    /// HS
    pub head_size: usize,
    pub rope_theta: f32,
    /// Llama 3's rope scaling (factor 0: none).
    pub rope_scaling: RopeScaling,
    /// Dims of each head that rope rotates (Phi's partial rotary; the head size otherwise).
    pub rotary_dims: usize,
    /// Phi-3.5 / Phi-4-mini's LongRoPE.
    pub longrope: Option<LongRopeConfig>,
    pub rms_norm_eps: f32,
    pub tie_embeddings: bool,
    /// q/k/v projections carry a bias (Qwen2).
    pub qkv_bias: bool,
    /// Per-head RMSNorm of q and k before rope (Qwen3's q_norm, k_norm).
    pub qk_norm: bool,
    /// Layers that apply no rope (SmolLM3's NoPE layers); empty for the other families.
    pub nope_layers: Vec<usize>,
    /// Multiplies the token embeddings (Gemma: √hidden; 1 for the others).
    pub embed_scale: f32,
    /// Norms after attention and after the MLP, before each residual add (Gemma 3).
    pub post_norms: bool,
    pub activation: Activation,
    /// Multiplies q·k in attention: 1/√HS, or Gemma's query_pre_attn_scalar^−½.
    pub attn_scale: f32,
    /// Gemma 3's sliding-window layers (and Phi-3's window, on every layer).
    pub local_attention: Option<LocalAttention>,
    /// q/k/v and gate/up are stored fused (Phi-3's qkv_proj and gate_up_proj), and adapters
    /// adapt them fused, as PEFT does.
    pub fused: bool,
    pub max_seq_len: usize,
    /// Mistral's sliding attention window. Hearth attends to the whole context, which is the
    /// same while the context fits the window, so longer contexts are refused.
    pub sliding_window: Option<usize>,
}

/// LongRoPE with its short factors, which hold for contexts up to the original one: longer
/// contexts (where transformers switches to the long factors) are refused.
#[derive(Clone, Debug, PartialEq)]
pub struct LongRopeConfig {
    pub factors: crate::ops::rope::LongRope,
    pub original_max_position: usize,
    /// The rope parameters as config.json has them (the long factors too), written back on
    /// export.
    pub hf: serde_json::Value,
}

/// Layers that attend to the last `window` tokens only, with their own rope theta (Gemma 3's
/// "sliding_attention" layers); the others attend to the whole context.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalAttention {
    pub window: usize,
    pub layers: Vec<usize>,
    /// Their own rope theta, unscaled (Gemma 3); None: the model's rope (Phi-3).
    pub rope_theta: Option<f32>,
}

#[derive(Deserialize)]
struct HfConfig {
    model_type: Option<String>,
    architectures: Option<Vec<String>>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rope_theta: Option<f32>,
    rms_norm_eps: Option<f32>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    max_position_embeddings: Option<usize>,
    sliding_window: Option<usize>,
    rope_scaling: Option<serde_json::Value>,
    rope_parameters: Option<serde_json::Value>,
    use_sliding_window: Option<bool>,
    /// SmolLM3: 1 where a layer applies rope, 0 where it does not.
    no_rope_layers: Option<Vec<u8>>,
    no_rope_layer_interval: Option<usize>,
    /// Features Hearth does not implement: refused when set.
    attn_logit_softcapping: Option<f64>,
    final_logit_softcapping: Option<f64>,
    num_experts: Option<usize>,
    num_local_experts: Option<usize>,
    layer_types: Option<Vec<String>>,
    hidden_activation: Option<String>,
    hidden_act: Option<String>,
    query_pre_attn_scalar: Option<f32>,
    sliding_window_pattern: Option<usize>,
    rope_local_base_freq: Option<f32>,
    partial_rotary_factor: Option<f32>,
    original_max_position_embeddings: Option<usize>,
}

impl Config {
    /// What sets the model apart from a plain Llama block, in words (`hearth info`, the
    /// page's model info): tied embeddings, biases, head norms, NoPE layers, rope scaling,
    /// a sliding window.
    pub fn features(&self) -> Vec<String> {
        let mut f = Vec::new();
        if self.tie_embeddings {
            f.push("tied embeddings".to_string());
        }
        if self.qkv_bias {
            f.push("q/k/v biases".to_string());
        }
        if self.qk_norm {
            f.push("per-head q/k norms".to_string());
        }
        if !self.nope_layers.is_empty() {
            let layers: Vec<String> = self.nope_layers.iter().map(|l| l.to_string()).collect();
            f.push(format!("no rope on layers {}", layers.join(", ")));
        }
        if self.rope_scaling.factor > 0.0 {
            f.push(format!("Llama 3 rope scaling ×{}", self.rope_scaling.factor));
        }
        if self.head_size * self.n_heads != self.hidden_size {
            f.push(format!("head size {} (not hidden / heads)", self.head_size));
        }
        if let Some(w) = self.sliding_window {
            f.push(format!("sliding window {w} (contexts up to it)"));
        }
        if let Some(l) = &self.local_attention {
            let theta = l.rope_theta.map(|t| format!(", rope theta {t}")).unwrap_or_default();
            f.push(format!("sliding window {} on {} of {} layers{theta}", l.window, l.layers.len(), self.n_layers));
        }
        if self.rotary_dims != self.head_size {
            f.push(format!("rope on {} of {} dims per head", self.rotary_dims, self.head_size));
        }
        if let Some(l) = &self.longrope {
            f.push(format!("LongRoPE (short factors; contexts up to {})", l.original_max_position));
        }
        if self.post_norms {
            f.push("post-attention and post-MLP norms".to_string());
        }
        if self.activation != Activation::Silu {
            f.push(format!("{} MLP", self.activation.name()));
        }
        if self.embed_scale != 1.0 {
            f.push(format!("embeddings × {:.2}", self.embed_scale));
        }
        if (self.attn_scale - 1.0 / (self.head_size as f32).sqrt()).abs() > 1e-7 {
            f.push(format!("attention scale {:.4}", self.attn_scale));
        }
        f
    }

    /// The longest context Hearth computes as transformers does, where that is shorter than
    /// the model's, and why: Mistral's sliding window (Hearth attends to the whole context) or
    /// LongRoPE's original context (past it transformers switches to the long factors).
    pub fn context_limit(&self) -> Option<(usize, String)> {
        if let Some(w) = self.sliding_window {
            return Some((w, format!("its sliding attention window of {w} (Hearth attends to the whole context)")));
        }
        self.longrope.as_ref().map(|l| {
            let n = l.original_max_position;
            (n, format!("LongRoPE's original context of {n} (Hearth has the short factors only)"))
        })
    }

    /// Layer `i`'s attention window (0: the whole context) and its own rope theta (None:
    /// the model's rope with its scaling).
    pub fn layer_attention(&self, i: usize) -> (usize, Option<f32>) {
        match &self.local_attention {
            Some(l) if l.layers.contains(&i) => (l.window, l.rope_theta),
            _ => (0, None),
        }
    }

    /// Whether layer `i` applies rope to q and k.
    pub fn uses_rope(&self, i: usize) -> bool {
        !self.nope_layers.contains(&i)
    }

    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_size
    }

    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_size
    }

    /// Parses an HF config.json; `file` names it in errors.
    pub fn from_hf_json(text: &str, file: &str) -> Result<Self> {
        let c: HfConfig = serde_json::from_str(text).map_err(|e| Error::bad_file(file, format!("{e}")).with_source(e))?;
        let arch_name = c
            .model_type
            .clone()
            .or_else(|| c.architectures.as_ref().and_then(|a| a.first().cloned()))
            .ok_or_else(|| Error::bad_file(file, "no model_type or architectures field"))?;
        if arch_name == "gemma3" {
            return Err(Error::unsupported(file, "the multimodal Gemma 3 (model_type gemma3) is not supported; Hearth loads Gemma 3's text models (gemma3_text: 270M, 1B)"));
        }
        let arch = Arch::parse(&arch_name, file)?;
        // rope scaling changes the frequencies: Llama 3's "llama3" is supported; refuse the
        // others (YaRN, linear, dynamic) rather than give silently different numbers.
        let mut rope_scaling = RopeScaling::default();
        let mut longrope_params = None;
        for scaling in [&c.rope_scaling, &c.rope_parameters].into_iter().flatten() {
            let kind = scaling.get("rope_type").or_else(|| scaling.get("type")).and_then(|v| v.as_str()).unwrap_or("default");
            // transformers reads Phi-3's older "su" and "yarn" as longrope
            let kind = if arch == Arch::Phi3 && matches!(kind, "su" | "yarn") { "longrope" } else { kind };
            let num = |k: &str| {
                scaling.get(k).and_then(|v| v.as_f64()).map(|v| v as f32).ok_or_else(|| Error::bad_file(file, format!("rope scaling \"llama3\" lacks {k}")))
            };
            match kind {
                "default" => {}
                "llama3" => {
                    rope_scaling = RopeScaling {
                        factor: num("factor")?,
                        low_freq_factor: num("low_freq_factor")?,
                        high_freq_factor: num("high_freq_factor")?,
                        original_max_position: num("original_max_position_embeddings")?,
                    }
                }
                "longrope" => longrope_params = Some(scaling.clone()),
                other => return Err(Error::unsupported(file, format!("rope scaling \"{other}\" is not supported (Hearth knows \"llama3\" and \"longrope\")"))),
            }
        }
        refuse_unimplemented(&c, arch, file)?;
        let nope_layers = match arch {
            Arch::SmolLM3 => match &c.no_rope_layers {
                Some(flags) if flags.len() == c.num_hidden_layers => flags.iter().enumerate().filter(|(_, &f)| f == 0).map(|(i, _)| i).collect(),
                Some(flags) => {
                    return Err(Error::bad_file(file, format!("no_rope_layers has {} entries for {} layers", flags.len(), c.num_hidden_layers)))
                }
                None => smollm3_nope_layers(c.num_hidden_layers, c.no_rope_layer_interval.unwrap_or(4)),
            },
            _ => Vec::new(),
        };
        let mut rope_theta = c
            .rope_theta
            .or_else(|| c.rope_parameters.as_ref().and_then(|p| p.get("rope_theta")).and_then(|v| v.as_f64()).map(|v| v as f32))
            .unwrap_or(10000.0);
        let head_size = c.head_dim.unwrap_or(c.hidden_size / c.num_attention_heads.max(1));
        let partial = c
            .partial_rotary_factor
            .or_else(|| c.rope_parameters.as_ref().and_then(|p| p.get("partial_rotary_factor")).and_then(|v| v.as_f64()).map(|v| v as f32))
            .unwrap_or(1.0);
        // transformers: int(head_dim · factor)
        let rotary_dims = (head_size as f32 * partial) as usize;
        let longrope = match longrope_params {
            Some(p) => Some(longrope_config(&p, rotary_dims, c.max_position_embeddings.unwrap_or(4096), c.original_max_position_embeddings, file)?),
            None => None,
        };
        let activation = match c.hidden_activation.as_deref().or(c.hidden_act.as_deref()).unwrap_or("silu") {
            "silu" | "swish" => Activation::Silu,
            "gelu_pytorch_tanh" => Activation::GeluTanh,
            other => return Err(Error::unsupported(file, format!("the MLP activation \"{other}\" is not supported (silu, gelu_pytorch_tanh)"))),
        };
        let mut local_attention = None;
        if arch == Arch::Gemma3 {
            let (full, local) = gemma3_rope(&c, file)?;
            rope_theta = full;
            let window = c.sliding_window.ok_or_else(|| Error::bad_file(file, "Gemma 3 needs sliding_window"))?;
            let layers = match &c.layer_types {
                Some(types) => types.iter().enumerate().filter(|(_, t)| t.as_str() == "sliding_attention").map(|(i, _)| i).collect(),
                None => gemma3_local_layers(c.num_hidden_layers, c.sliding_window_pattern.unwrap_or(6)),
            };
            local_attention = Some(LocalAttention { window, layers, rope_theta: Some(local) });
        }
        if arch == Arch::Phi3 {
            // transformers' Phi-3 applies its window on every layer
            local_attention = c.sliding_window.map(|window| LocalAttention { window, layers: (0..c.num_hidden_layers).collect(), rope_theta: None });
        }
        let cfg = Config {
            arch,
            vocab_size: c.vocab_size,
            hidden_size: c.hidden_size,
            intermediate_size: c.intermediate_size,
            n_layers: c.num_hidden_layers,
            n_heads: c.num_attention_heads,
            n_kv_heads: c.num_key_value_heads.unwrap_or(c.num_attention_heads),
            head_size,
            rope_theta,
            rope_scaling,
            rotary_dims,
            longrope,
            rms_norm_eps: c.rms_norm_eps.unwrap_or(1e-6),
            tie_embeddings: c.tie_word_embeddings.unwrap_or(false),
            qkv_bias: arch == Arch::Qwen2 || c.attention_bias.unwrap_or(false),
            qk_norm: matches!(arch, Arch::Qwen3 | Arch::Gemma3),
            nope_layers,
            embed_scale: if arch == Arch::Gemma3 { (c.hidden_size as f32).sqrt() } else { 1.0 },
            post_norms: arch == Arch::Gemma3,
            activation,
            attn_scale: 1.0 / c.query_pre_attn_scalar.filter(|_| arch == Arch::Gemma3).unwrap_or(head_size as f32).sqrt(),
            local_attention,
            fused: arch == Arch::Phi3,
            max_seq_len: c.max_position_embeddings.unwrap_or(4096),
            // Qwen2's configs carry a window with use_sliding_window false
            sliding_window: if arch == Arch::Mistral { c.sliding_window } else { None },
        };
        cfg.validate(file)?;
        Ok(cfg)
    }

    /// Reads `<arch>.*` metadata of a GGUF file; `file` names it in errors.
    pub fn from_gguf(g: &Gguf, file: &str) -> Result<Self> {
        let arch_name = g
            .get("general.architecture")
            .and_then(GgufValue::as_str)
            .ok_or_else(|| Error::bad_file(file, "metadata general.architecture is missing"))?;
        let arch = Arch::parse(arch_name, file)?;
        let key = |k: &str| format!("{arch_name}.{k}");
        let int = |k: &str| -> Result<usize> {
            g.get(&key(k))
                .and_then(GgufValue::as_u64)
                .map(|v| v as usize)
                .ok_or_else(|| Error::bad_file(file, format!("metadata {} is missing or not an integer", key(k))))
        };
        let float = |k: &str| g.get(&key(k)).and_then(GgufValue::as_f64);
        let vocab_size = match g.get(&key("vocab_size")).and_then(GgufValue::as_u64) {
            Some(v) => v as usize,
            None => g.get("tokenizer.ggml.tokens").and_then(GgufValue::as_array).map(|a| a.len()).unwrap_or(0),
        };
        let hidden_size = int("embedding_length")?;
        let n_heads = int("attention.head_count")?;
        if let Some(kind) = g.get(&key("rope.scaling.type")).and_then(GgufValue::as_str) {
            if kind != "none" {
                return Err(Error::unsupported(file, format!("rope scaling \"{kind}\" is not supported yet")));
            }
        }
        let head_size = int("attention.key_length").unwrap_or(hidden_size / n_heads.max(1));
        let n_layers = int("block_count")?;
        let rope_theta = float("rope.freq_base").unwrap_or(10000.0) as f32;
        let rotary_dims = int("rope.dimension_count").unwrap_or(head_size);
        let longrope = gguf_longrope(g, &key, rotary_dims, file)?;
        // Llama 3.1+ GGUFs carry their rope scaling as per-frequency divisors instead.
        let rope_scaling = match g.tensor("rope_freqs.weight") {
            Some(t) if t.ty == GgmlType::F32 && t.len == head_size / 2 * 4 => {
                let divisors: Vec<f32> = g.data(t)?.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
                llama3_scaling_from_divisors(&divisors, head_size, rope_theta, file)?
            }
            Some(t) => {
                return Err(Error::bad_file(file, format!("rope_freqs.weight should hold {} f32 values (one per rotary frequency), found {:?} {:?}",
                    head_size / 2,
                    t.ty,
                    t.dims
                )))
            }
            None => RopeScaling::default(),
        };
        let cfg = Config {
            arch,
            vocab_size,
            hidden_size,
            intermediate_size: int("feed_forward_length")?,
            n_layers,
            n_heads,
            n_kv_heads: int("attention.head_count_kv").unwrap_or(n_heads),
            head_size,
            rope_theta,
            rope_scaling,
            rotary_dims,
            longrope,
            rms_norm_eps: float("attention.layer_norm_rms_epsilon").unwrap_or(1e-5) as f32,
            tie_embeddings: g.tensor("output.weight").is_none(),
            qkv_bias: g.tensor("blk.0.attn_q.bias").is_some(),
            qk_norm: matches!(arch, Arch::Qwen3 | Arch::Gemma3),
            // llama.cpp writes no key for them: every 4th layer, as its smollm3 graph does
            nope_layers: if arch == Arch::SmolLM3 { smollm3_nope_layers(n_layers, 4) } else { Vec::new() },
            max_seq_len: int("context_length").unwrap_or(4096),
            sliding_window: if matches!(arch, Arch::Gemma3 | Arch::Phi3) { None } else { int("attention.sliding_window").ok() },
            embed_scale: if arch == Arch::Gemma3 { (hidden_size as f32).sqrt() } else { 1.0 },
            post_norms: arch == Arch::Gemma3,
            activation: if arch == Arch::Gemma3 { Activation::GeluTanh } else { Activation::Silu },
            // llama.cpp scales by 1/√(key length) (query_pre_attn_scalar is the head size for
            // the text models)
            attn_scale: 1.0 / (head_size as f32).sqrt(),
            // as llama.cpp's gemma3 graph: every 6th layer global, the others a window with
            // rope theta 10000 (no metadata keys for the pattern and the theta)
            local_attention: match arch {
                Arch::Gemma3 => Some(LocalAttention {
                    window: int("attention.sliding_window")?,
                    layers: gemma3_local_layers(n_layers, 6),
                    rope_theta: Some(10000.0),
                }),
                Arch::Phi3 => int("attention.sliding_window").ok().map(|window| LocalAttention { window, layers: (0..n_layers).collect(), rope_theta: None }),
                _ => None,
            },
            fused: arch == Arch::Phi3,
        };
        cfg.validate(file)?;
        Ok(cfg)
    }

    fn validate(&self, file: &str) -> Result<()> {
        let bad = |what: String| Err(Error::bad_file(file, what.to_string()));
        if self.vocab_size == 0 || self.hidden_size == 0 || self.n_layers == 0 || self.intermediate_size == 0 {
            return bad(format!("empty sizes in the config: {self:?}"));
        }
        if self.n_heads == 0 || self.n_kv_heads == 0 || !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return bad(format!("{} attention heads do not divide into {} KV heads", self.n_heads, self.n_kv_heads));
        }
        if !self.head_size.is_multiple_of(2) || self.head_size > crate::ops::attention::MAX_HEAD_SIZE {
            return bad(format!("head size {} is not supported (even, at most {})", self.head_size, crate::ops::attention::MAX_HEAD_SIZE));
        }
        Ok(())
    }

    /// Weights of the blocks' linear layers (q, k, v, o, gate, up, down): what `--quant` converts.
    pub fn linear_param_count(&self) -> usize {
        let c = self.hidden_size;
        self.n_layers * (2 * c * self.q_dim() + 2 * c * self.kv_dim() + 3 * c * self.intermediate_size)
    }

    /// Parameters of the base model (embedding counted once when tied).
    pub fn param_count(&self) -> usize {
        let c = self.hidden_size;
        let bias = if self.qkv_bias { self.q_dim() + 2 * self.kv_dim() } else { 0 };
        let head_norms = if self.qk_norm { 2 * self.head_size } else { 0 };
        let post_norms = if self.post_norms { 2 * c } else { 0 };
        let embed = self.vocab_size * c * if self.tie_embeddings { 1 } else { 2 };
        self.linear_param_count() + self.n_layers * (bias + head_norms + post_norms + 2 * c) + embed + c
    }
}

/// LongRoPE's short factors and attention factor, as transformers' _compute_longrope_parameters.
fn longrope_config(p: &serde_json::Value, rotary_dims: usize, max_position: usize, original: Option<usize>, file: &str) -> Result<LongRopeConfig> {
    let original = p
        .get("original_max_position_embeddings")
        .and_then(|v| v.as_u64())
        .map(|v| v as usize)
        .or(original)
        .ok_or_else(|| Error::bad_file(file, "rope scaling \"longrope\" lacks original_max_position_embeddings"))?;
    let short: Vec<f32> = p
        .get("short_factor")
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|x| x.as_f64()).map(|x| x as f32).collect())
        .ok_or_else(|| Error::bad_file(file, "rope scaling \"longrope\" lacks short_factor"))?;
    if short.len() != rotary_dims / 2 || short.len() > crate::ops::rope::MAX_FREQS {
        return Err(Error::bad_file(file, format!("longrope's short_factor has {} values for {} rotary frequencies", short.len(), rotary_dims / 2)));
    }
    let factor = p.get("factor").and_then(|v| v.as_f64()).unwrap_or(max_position as f64 / original as f64);
    let mscale = match p.get("attention_factor").and_then(|v| v.as_f64()) {
        Some(a) => a,
        None if factor <= 1.0 => 1.0,
        None => (1.0 + factor.ln() / (original as f64).ln()).sqrt(),
    };
    let mut divisors = [1.0; crate::ops::rope::MAX_FREQS];
    divisors[..short.len()].copy_from_slice(&short);
    Ok(LongRopeConfig { factors: crate::ops::rope::LongRope { divisors, mscale: mscale as f32 }, original_max_position: original, hf: p.clone() })
}

/// LongRoPE as llama.cpp's converter writes Phi-3's: the short factors in
/// rope_factors_short.weight, <arch>.rope.scaling.attn_factor and .original_context_length.
fn gguf_longrope(g: &Gguf, key: &dyn Fn(&str) -> String, rotary_dims: usize, file: &str) -> Result<Option<LongRopeConfig>> {
    let Some(t) = g.tensor("rope_factors_short.weight") else { return Ok(None) };
    if t.ty != GgmlType::F32 || t.len != rotary_dims / 2 * 4 || rotary_dims / 2 > crate::ops::rope::MAX_FREQS {
        return Err(Error::bad_file(file, format!("rope_factors_short.weight should hold {} f32 values (at most {}), found {:?} {:?}", rotary_dims / 2, crate::ops::rope::MAX_FREQS, t.ty, t.dims)));
    }
    let short: Vec<f32> = g.data(t)?.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    let original = g
        .get(&key("rope.scaling.original_context_length"))
        .and_then(GgufValue::as_u64)
        .ok_or_else(|| Error::bad_file(file, format!("LongRoPE needs {}", key("rope.scaling.original_context_length"))))? as usize;
    let mscale = g.get(&key("rope.scaling.attn_factor")).and_then(GgufValue::as_f64).unwrap_or(1.0) as f32;
    let mut divisors = [1.0; crate::ops::rope::MAX_FREQS];
    divisors[..short.len()].copy_from_slice(&short);
    let long: Vec<f32> = match g.tensor("rope_factors_long.weight") {
        Some(l) if l.ty == GgmlType::F32 => g.data(l)?.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(),
        _ => short.clone(),
    };
    let hf = serde_json::json!({"rope_type": "longrope", "short_factor": short, "long_factor": long, "original_max_position_embeddings": original, "attention_factor": mscale});
    Ok(Some(LongRopeConfig { factors: crate::ops::rope::LongRope { divisors, mscale }, original_max_position: original, hf }))
}

/// Gemma 3's sliding-window layers from its pattern: all but every `pattern`-th.
fn gemma3_local_layers(n_layers: usize, pattern: usize) -> Vec<usize> {
    (0..n_layers).filter(|i| pattern == 0 || (i + 1) % pattern != 0).collect()
}

/// Gemma 3's rope thetas (global layers, sliding layers): `rope_parameters` per layer type
/// (transformers 5) or rope_theta and rope_local_base_freq; only the default rope (no
/// scaling) is supported for either.
fn gemma3_rope(c: &HfConfig, file: &str) -> Result<(f32, f32)> {
    let part = |kind: &str| c.rope_parameters.as_ref().and_then(|p| p.get(kind));
    for kind in ["full_attention", "sliding_attention"] {
        if let Some(t) = part(kind).and_then(|p| p.get("rope_type")).and_then(|v| v.as_str()).filter(|t| *t != "default") {
            return Err(Error::unsupported(file, format!("rope scaling \"{t}\" of the {kind} layers is not supported")));
        }
    }
    let theta = |kind: &str| part(kind).and_then(|p| p.get("rope_theta")).and_then(|v| v.as_f64()).map(|v| v as f32);
    let full = theta("full_attention").or(c.rope_theta).unwrap_or(1_000_000.0);
    let local = theta("sliding_attention").or(c.rope_local_base_freq).unwrap_or(10_000.0);
    Ok((full, local))
}

/// SmolLM3's default NoPE layers: every `interval`-th (layers interval−1, 2·interval−1, …).
fn smollm3_nope_layers(n_layers: usize, interval: usize) -> Vec<usize> {
    (0..n_layers).filter(|i| interval > 0 && (i + 1) % interval == 0).collect()
}

/// Refuses a config that switches on what Hearth does not compute, naming the feature,
/// rather than run it with different numbers.
fn refuse_unimplemented(c: &HfConfig, arch: Arch, file: &str) -> Result<()> {
    let refuse = |what: String| Err(Error::unsupported(file, what));
    if matches!(arch, Arch::Qwen2 | Arch::Qwen3 | Arch::SmolLM3) && c.use_sliding_window == Some(true) {
        return refuse("use_sliding_window: Hearth does not compute this family's sliding-window attention".into());
    }
    for (name, v) in [("attn_logit_softcapping", c.attn_logit_softcapping), ("final_logit_softcapping", c.final_logit_softcapping)] {
        if v.is_some() {
            return refuse(format!("{name}: Hearth does not cap logits"));
        }
    }
    for (name, v) in [("num_experts", c.num_experts), ("num_local_experts", c.num_local_experts)] {
        if v.is_some_and(|n| n > 0) {
            return refuse(format!("{name}: mixture-of-experts layers are not supported"));
        }
    }
    if let Some(t) = c.layer_types.iter().flatten().find(|t| t.as_str() != "full_attention" && !(t.as_str() == "sliding_attention" && c.use_sliding_window != Some(true))) {
        return refuse(format!("layer_types: \"{t}\" layers are not supported"));
    }
    Ok(())
}

/// Llama 3's rope scaling from the per-frequency divisors llama.cpp's converter writes to
/// rope_freqs.weight (1 for high frequencies, `factor` for low ones, a smooth blend between).
/// Llama 3.x uses low/high frequency factors 1 and 4; `factor` is the largest divisor and the
/// original context follows from a blended divisor (or from where the bands meet). The
/// parameters are accepted only if they give back every divisor (low/high pairs of the same
/// ratio give the same divisors at another context, so they are read as (1, 4)).
fn llama3_scaling_from_divisors(divisors: &[f32], head_size: usize, theta: f32, file: &str) -> Result<RopeScaling> {
    let factor = divisors.iter().copied().fold(0.0f32, f32::max);
    if factor <= 1.0 + 1e-6 && divisors.iter().all(|&d| (d - 1.0).abs() < 1e-6) {
        return Ok(RopeScaling::default());
    }
    let (low, high) = (1.0f64, 4.0f64);
    let plain: Vec<f64> =
        (0..divisors.len()).map(|j| crate::ops::cpu::rope_inv_freq(j, head_size, theta as f64, &RopeScaling::default())).collect();
    let wavelen = |j: usize| 2.0 * std::f64::consts::PI / plain[j];
    let f = factor as f64;
    let mut candidates = vec![8192.0f64];
    for (j, &d) in divisors.iter().enumerate() {
        let d = d as f64;
        if d > 1.0 + 1e-4 && d < f - 1e-4 {
            let smooth = (1.0 / d - 1.0 / f) / (1.0 - 1.0 / f);
            candidates.push(wavelen(j) * (smooth * (high - low) + low));
        }
    }
    // no blended divisor: any context between the bands' edges gives the same divisors
    let last_one = divisors.iter().rposition(|&d| (d - 1.0).abs() < 1e-6).map(wavelen);
    let first_full = divisors.iter().position(|&d| (d - factor).abs() < 1e-6).map(wavelen);
    if let (Some(a), Some(b)) = (last_one, first_full) {
        candidates.push((a * high * b * low).sqrt());
    }
    // contexts are whole numbers: try the rounded value first
    for original in candidates.iter().flat_map(|&c| [c.round(), c]) {
        let s = RopeScaling { factor, low_freq_factor: low as f32, high_freq_factor: high as f32, original_max_position: original as f32 };
        let fits = divisors.iter().enumerate().all(|(j, &d)| {
            let scaled = crate::ops::cpu::rope_inv_freq(j, head_size, theta as f64, &s);
            ((plain[j] / scaled) / d as f64 - 1.0).abs() < 1e-4
        });
        if fits {
            return Ok(s);
        }
    }
    Err(Error::unsupported(file, "rope_freqs.weight is not Llama 3's rope scaling (low/high frequency factors 1 and 4) for any original context; the model's HF folder works"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// rope_freqs.weight as llama.cpp's converter computes it (convert_hf_to_gguf.py).
    fn divisors(hs: usize, theta: f64, factor: f64, low: f64, high: f64, original: f64) -> Vec<f32> {
        (0..hs / 2)
            .map(|j| {
                let wavelen = 2.0 * std::f64::consts::PI * theta.powf((2 * j) as f64 / hs as f64);
                if wavelen < original / high {
                    1.0
                } else if wavelen > original / low {
                    factor as f32
                } else {
                    let smooth = (original / wavelen - low) / (high - low);
                    (1.0 / ((1.0 - smooth) / factor + smooth)) as f32
                }
            })
            .collect()
    }

    #[test]
    fn llama3_scaling_is_recovered_from_rope_freqs() {
        // Llama 3.1 8B and Llama 3.2 1B
        for (hs, theta, factor) in [(128, 500000.0, 8.0), (64, 500000.0, 32.0)] {
            let d = divisors(hs, theta, factor, 1.0, 4.0, 8192.0);
            let s = llama3_scaling_from_divisors(&d, hs, theta as f32, "m.gguf").unwrap();
            assert_eq!((s.factor, s.low_freq_factor, s.high_freq_factor, s.original_max_position), (factor as f32, 1.0, 4.0, 8192.0));
        }
        // no scaling at all
        assert_eq!(llama3_scaling_from_divisors(&[1.0; 32], 64, 10000.0, "m.gguf").unwrap(), RopeScaling::default());
        // other factors (low 2, high 8) give the same divisors as (1, 4) at half the context
        let d = divisors(128, 500000.0, 8.0, 2.0, 8.0, 8192.0);
        assert_eq!(llama3_scaling_from_divisors(&d, 128, 500000.0, "m.gguf").unwrap().original_max_position, 4096.0);
        // linear scaling (every frequency divided by 2) is not Llama 3's
        let err = llama3_scaling_from_divisors(&[2.0; 64], 128, 500000.0, "m.gguf").unwrap_err().to_string();
        assert!(err.contains("m.gguf") && err.contains("rope_freqs.weight"), "{err}");
    }
}
