//! LoRA adapters: which linear layers carry one, their rank and scale, PEFT's
//! initialization, PEFT's file format ([`peft`]), the GPU copy ([`gpu`]) and merging into
//! the base weights ([`merge`]).

pub mod gpu;
pub mod gguf;
pub mod merge;
pub mod peft;

use crate::model::config::Config;
use crate::rng::Rng;
use crate::{Error, Result};

/// A linear layer of a decoder block that can carry an adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
    /// Phi-3's fused q, k, v projection (qkv_proj): one adapter over the three.
    Qkv,
    /// Phi-3's fused gate and up projection (gate_up_proj).
    GateUp,
}

impl Target {
    /// The separate layers: what "all-linear" names before [`Target::for_model`].
    pub const ALL: [Target; 7] = [Target::Q, Target::K, Target::V, Target::O, Target::Gate, Target::Up, Target::Down];
    /// Every target, fused ones included; `target as usize` indexes it.
    pub const EVERY: [Target; 9] = [Target::Q, Target::K, Target::V, Target::O, Target::Gate, Target::Up, Target::Down, Target::Qkv, Target::GateUp];
    pub const COUNT: usize = 9;

    /// PEFT's module name.
    pub fn name(self) -> &'static str {
        match self {
            Target::Q => "q_proj",
            Target::K => "k_proj",
            Target::V => "v_proj",
            Target::O => "o_proj",
            Target::Gate => "gate_proj",
            Target::Up => "up_proj",
            Target::Down => "down_proj",
            Target::Qkv => "qkv_proj",
            Target::GateUp => "gate_up_proj",
        }
    }

    /// The module's path inside a block: `self_attn.q_proj`, `mlp.down_proj`.
    pub fn path(self) -> &'static str {
        match self {
            Target::Q => "self_attn.q_proj",
            Target::K => "self_attn.k_proj",
            Target::V => "self_attn.v_proj",
            Target::O => "self_attn.o_proj",
            Target::Gate => "mlp.gate_proj",
            Target::Up => "mlp.up_proj",
            Target::Down => "mlp.down_proj",
            Target::Qkv => "self_attn.qkv_proj",
            Target::GateUp => "mlp.gate_up_proj",
        }
    }

    pub fn from_name(name: &str) -> Option<Target> {
        Target::EVERY.into_iter().find(|t| t.name() == name)
    }

    /// The separate layers a fused one stands for, in the order of its output rows.
    pub fn parts(self) -> &'static [Target] {
        match self {
            Target::Qkv => &[Target::Q, Target::K, Target::V],
            Target::GateUp => &[Target::Gate, Target::Up],
            Target::Q => &[Target::Q],
            Target::K => &[Target::K],
            Target::V => &[Target::V],
            Target::O => &[Target::O],
            Target::Gate => &[Target::Gate],
            Target::Up => &[Target::Up],
            Target::Down => &[Target::Down],
        }
    }

    /// The fused layer this one is part of in a model that fuses (Phi-3), or itself.
    pub fn fused(self) -> Target {
        match self {
            Target::Q | Target::K | Target::V => Target::Qkv,
            Target::Gate | Target::Up => Target::GateUp,
            other => other,
        }
    }

    pub fn is_fused(self) -> bool {
        matches!(self, Target::Qkv | Target::GateUp)
    }

    /// Whether `model` has this layer to adapt: a fusing model (Phi-3) its fused layers and the
    /// others as they are, every other model the separate layers.
    pub fn in_model(self, model: &Config) -> bool {
        if model.fused {
            self.fused() == self
        } else {
            !self.is_fused()
        }
    }

    /// The targets as `model` has its layers: a fusing model (Phi-3) adapts q, k, v as
    /// qkv_proj and gate, up as gate_up_proj (PEFT's names), only all of them together; the
    /// others have no fused layers.
    pub fn for_model(targets: &[Target], model: &Config) -> Result<Vec<Target>> {
        let mut out: Vec<Target> = Vec::new();
        for &t in targets {
            let t = if model.fused { t.fused() } else { t };
            if t.is_fused() && !model.fused {
                return Err(Error::invalid_setting("targets", format!("{} is a fused layer of Phi-3; this {} model has {}", t.name(), model.arch.name(),
                    t.parts().iter().map(|p| p.name()).collect::<Vec<_>>().join(", "))));
            }
            if !out.contains(&t) {
                out.push(t);
            }
        }
        if model.fused {
            for &f in &[Target::Qkv, Target::GateUp] {
                let named: Vec<&Target> = f.parts().iter().filter(|p| targets.contains(p)).collect();
                if !named.is_empty() && named.len() < f.parts().len() && !targets.contains(&f) {
                    return Err(Error::invalid_setting("targets", format!("{} fuses {} into one layer: adapt {} (or all of its parts)", model.arch.name(),
                        f.parts().iter().map(|p| p.name()).collect::<Vec<_>>().join(", "), f.name())));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// (out features, in features) of the layer.
    pub fn shape(self, cfg: &Config) -> (usize, usize) {
        let (c, ff) = (cfg.hidden_size, cfg.intermediate_size);
        match self {
            Target::Q => (cfg.q_dim(), c),
            Target::K | Target::V => (cfg.kv_dim(), c),
            Target::O => (c, cfg.q_dim()),
            Target::Gate | Target::Up => (ff, c),
            Target::Down => (c, ff),
            Target::Qkv => (cfg.q_dim() + 2 * cfg.kv_dim(), c),
            Target::GateUp => (2 * ff, c),
        }
    }

    /// Rows of the fused layer's output that part `self` holds.
    pub fn rows_in(self, fused: Target, cfg: &Config) -> std::ops::Range<usize> {
        let mut start = 0;
        for &p in fused.parts() {
            let rows = p.shape(cfg).0;
            if p == self {
                return start..start + rows;
            }
            start += rows;
        }
        panic!("{self:?} is not a part of {fused:?}")
    }

    /// "q_proj,v_proj" or "all-linear" (every linear layer of the blocks, as PEFT's
    /// all-linear picks for a causal LM: the lm_head is left out).
    pub fn parse_list(s: &str) -> Result<Vec<Target>> {
        if s.trim() == "all-linear" {
            return Ok(Target::ALL.to_vec());
        }
        let mut out = Vec::new();
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let t = Target::from_name(name).ok_or_else(|| {
                Error::invalid_setting("targets", format!(
                    "unknown target module \"{name}\" (expected q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, qkv_proj, gate_up_proj or all-linear)"
                ))
            })?;
            if !out.contains(&t) {
                out.push(t);
            }
        }
        if out.is_empty() {
            return Err(Error::invalid_setting("targets", "no target modules given"));
        }
        out.sort();
        Ok(out)
    }
}

/// The adapter's hyperparameters (PEFT's LoraConfig).
#[derive(Clone, Debug, PartialEq)]
pub struct LoraConfig {
    pub r: usize,
    pub alpha: f32,
    /// Scale by alpha/√r instead of alpha/r.
    pub rslora: bool,
    pub dropout: f32,
    pub targets: Vec<Target>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig { r: 16, alpha: 32.0, rslora: false, dropout: 0.05, targets: Target::ALL.to_vec() }
    }
}

impl LoraConfig {
    pub fn scale_for(alpha: f32, r: usize, rslora: bool) -> f32 {
        if rslora {
            alpha / (r as f32).sqrt()
        } else {
            alpha / r as f32
        }
    }

    pub fn scale(&self) -> f32 {
        Self::scale_for(self.alpha, self.r, self.rslora)
    }

    pub fn check(&self) -> Result<()> {
        if self.r == 0 {
            return Err(Error::invalid_setting("r", "the LoRA rank must be at least 1"));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::invalid_setting("dropout", format!("{} is outside [0, 1)", self.dropout)));
        }
        Ok(())
    }
}

/// One adapted layer: A (r, in) and B (out, r), y += scale·(x·Aᵀ)·Bᵀ.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraTensor {
    pub layer: usize,
    pub target: Target,
    pub rank: usize,
    pub d_in: usize,
    pub d_out: usize,
    pub scale: f32,
    pub a: Vec<f32>,
    pub b: Vec<f32>,
}

impl LoraTensor {
    /// PEFT's key prefix: `base_model.model.model.layers.3.self_attn.q_proj`.
    pub fn peft_prefix(&self) -> String {
        format!("base_model.model.model.layers.{}.{}", self.layer, self.target.path())
    }

    /// The Frobenius norm of the update this layer adds to its weight, ‖scale·B·A‖, without
    /// forming B·A: ‖B·A‖² = trace((BᵀB)(AAᵀ)), two r × r products.
    pub fn update_norm(&self) -> f64 {
        let r = self.rank;
        let gram = |m: &[f32], rows: usize, cols: usize, by_rows: bool| {
            // by_rows: M·Mᵀ for M (rows=r, cols); else Mᵀ·M for M (rows, cols=r)
            let mut g = vec![0f64; r * r];
            for i in 0..r {
                for j in 0..r {
                    g[i * r + j] = if by_rows {
                        (0..cols).map(|k| m[i * cols + k] as f64 * m[j * cols + k] as f64).sum()
                    } else {
                        (0..rows).map(|k| m[k * cols + i] as f64 * m[k * cols + j] as f64).sum()
                    };
                }
            }
            g
        };
        let aat = gram(&self.a, r, self.d_in, true);
        let btb = gram(&self.b, self.d_out, r, false);
        let sq: f64 = aat.iter().zip(&btb).map(|(x, y)| x * y).sum();
        self.scale as f64 * sq.max(0.0).sqrt()
    }
}

/// All adapted layers of a model, ordered by layer, then target.
#[derive(Clone, Debug, PartialEq)]
pub struct Adapter {
    pub cfg: LoraConfig,
    pub tensors: Vec<LoraTensor>,
}

impl Adapter {
    /// A new adapter initialized as PEFT does: A Kaiming-uniform (a = √5, which is
    /// U(−1/√in, 1/√in)), B zeros, so that training starts from the base model exactly.
    pub fn init(model: &Config, cfg: &LoraConfig, seed: u64) -> Result<Self> {
        cfg.check()?;
        let mut rng = Rng::new(seed);
        let mut tensors = Vec::new();
        let targets = Target::for_model(&cfg.targets, model)?;
        for layer in 0..model.n_layers {
            for &target in &targets {
                let (d_out, d_in) = target.shape(model);
                let bound = 1.0 / (d_in as f32).sqrt();
                tensors.push(LoraTensor {
                    layer,
                    target,
                    rank: cfg.r,
                    d_in,
                    d_out,
                    scale: cfg.scale(),
                    a: rng.vec_uniform(cfg.r * d_in, -bound, bound),
                    b: vec![0.0; d_out * cfg.r],
                });
            }
        }
        Ok(Adapter { cfg: LoraConfig { targets, ..cfg.clone() }, tensors })
    }

    pub fn trainable_params(&self) -> usize {
        self.tensors.iter().map(|t| t.a.len() + t.b.len()).sum()
    }

    /// PEFT's print_trainable_parameters line; `base` counts the frozen model's parameters.
    pub fn trainable_line(&self, base: usize) -> String {
        let t = self.trainable_params();
        let all = base + t;
        format!("trainable params: {t} || all params: {all} || trainable%: {:.4}", 100.0 * t as f64 / all as f64)
    }

    /// Checks every tensor against the model's shapes, naming the tensor that differs.
    pub fn check_against(&self, model: &Config, origin: &str) -> Result<()> {
        for t in &self.tensors {
            if t.layer >= model.n_layers {
                return Err(Error::Shape(format!(
                    "{origin}: {}.lora_A.weight is for layer {}, the model has {} layers",
                    t.peft_prefix(),
                    t.layer,
                    model.n_layers
                )));
            }
            if !t.target.in_model(model) {
                return Err(Error::Shape(format!(
                    "{origin}: {} adapts {}, a layer this {} model does not have: the adapter was made for another base model",
                    t.peft_prefix(),
                    t.target.name(),
                    model.arch.name()
                )));
            }
            let (out, inp) = t.target.shape(model);
            if (t.d_out, t.d_in) != (out, inp) {
                return Err(Error::Shape(format!(
                    "{origin}: {} adapts a ({}, {}) weight, the model's is ({out}, {inp}): the adapter was made for another base model",
                    t.peft_prefix(),
                    t.d_out,
                    t.d_in
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_norm_is_the_norm_of_scale_b_a() {
        let mut rng = crate::rng::Rng::new(7);
        let (r, d_in, d_out) = (3, 5, 4);
        let t = LoraTensor {
            layer: 0,
            target: Target::Q,
            rank: r,
            d_in,
            d_out,
            scale: 2.5,
            a: (0..r * d_in).map(|_| rng.uniform(-1.0, 1.0)).collect(),
            b: (0..d_out * r).map(|_| rng.uniform(-1.0, 1.0)).collect(),
        };
        let mut sq = 0f64;
        for o in 0..d_out {
            for i in 0..d_in {
                let x: f64 = (0..r).map(|k| t.b[o * r + k] as f64 * t.a[k * d_in + i] as f64).sum();
                sq += x * x;
            }
        }
        let want = 2.5 * sq.sqrt();
        assert!((t.update_norm() - want).abs() <= 1e-9 * want, "{} vs {want}", t.update_norm());
    }
    use crate::model::config::Arch;
    use crate::ops::rope::RopeScaling;

    fn cfg() -> Config {
        Config {
            arch: Arch::Llama,
            vocab_size: 50,
            hidden_size: 64,
            intermediate_size: 96,
            n_layers: 2,
            n_heads: 4,
            n_kv_heads: 2,
            head_size: 16,
            rope_theta: 10000.0,
            rope_scaling: RopeScaling::default(),
            rotary_dims: 16,
            longrope: None,
            rms_norm_eps: 1e-5,
            tie_embeddings: true,
            qkv_bias: false,
            qk_norm: false,
            nope_layers: Vec::new(),
            embed_scale: 1.0,
            post_norms: false,
            activation: crate::model::config::Activation::Silu,
            attn_scale: 0.25,
            local_attention: None,
            fused: false,
            sliding_window: None,
            max_seq_len: 128,
        }
    }

    #[test]
    fn init_is_peft_like_and_seeded() {
        let lc = LoraConfig { r: 4, alpha: 8.0, rslora: false, dropout: 0.0, targets: Target::parse_list("q_proj,down_proj").unwrap() };
        let a = Adapter::init(&cfg(), &lc, 1).unwrap();
        assert_eq!(a.tensors.len(), 4);
        let down = &a.tensors[1];
        assert_eq!((down.target, down.d_out, down.d_in, down.scale), (Target::Down, 64, 96, 2.0));
        let bound = 1.0 / (96f32).sqrt();
        assert!(down.a.iter().all(|x| x.abs() <= bound) && down.a.iter().any(|x| x.abs() > bound / 2.0));
        assert!(a.tensors.iter().all(|t| t.b.iter().all(|&x| x == 0.0)), "B starts at zero");
        assert_eq!(a, Adapter::init(&cfg(), &lc, 1).unwrap());
        assert_ne!(a, Adapter::init(&cfg(), &lc, 2).unwrap());
        assert_eq!(LoraConfig { rslora: true, ..lc }.scale(), 4.0);
        assert!(Target::parse_list("q_proj,lm_head").unwrap_err().to_string().contains("lm_head"));
        assert_eq!(a.trainable_params(), 2 * (4 * 64 + 64 * 4) + 2 * (4 * 96 + 64 * 4));
    }

    #[test]
    fn peft_files_round_trip() {
        let lc = LoraConfig { r: 2, alpha: 4.0, rslora: false, dropout: 0.1, targets: Target::ALL.to_vec() };
        let mut a = Adapter::init(&cfg(), &lc, 3).unwrap();
        a.tensors[5].b[1] = 0.25;
        let config = serde_json::to_string(&peft::config_json(&a, "base")).unwrap();
        let back = peft::read(&config, &peft::weights_bytes(&a).unwrap(), "dir").unwrap();
        assert_eq!(back, a);
        let e = peft::read(&config, b"garbage", "dir").unwrap_err().to_string();
        assert!(e.contains("dir/adapter_model.safetensors"), "{e}");
    }

    #[test]
    fn a_config_that_contradicts_the_tensors_is_refused() {
        let lc = LoraConfig { r: 2, alpha: 4.0, rslora: false, dropout: 0.0, targets: Target::parse_list("q_proj,v_proj").unwrap() };
        let a = Adapter::init(&cfg(), &lc, 3).unwrap();
        let weights = peft::weights_bytes(&a).unwrap();
        let mut config = peft::config_json(&a, "base");
        config["r"] = 4.into();
        let e = peft::read(&config.to_string(), &weights, "dir").unwrap_err();
        assert!(matches!(e, Error::BadFile { .. }) && e.to_string().contains("has rank 2, but adapter_config.json gives"), "{e}");
        config["rank_pattern"] = serde_json::json!({"q_proj": 2, "v_proj": 2});
        peft::read(&config.to_string(), &weights, "dir").expect("rank_pattern gives each module its rank");
        let mut config = peft::config_json(&a, "base");
        config["target_modules"] = serde_json::json!(["q_proj"]);
        let e = peft::read(&config.to_string(), &weights, "dir").unwrap_err().to_string();
        assert!(e.contains("v_proj") && e.contains("target_modules"), "{e}");
        config["target_modules"] = serde_json::json!(["self_attn.q_proj", "model.layers.0.self_attn.v_proj", "model.layers.1.self_attn.v_proj"]);
        peft::read(&config.to_string(), &weights, "dir").expect("names match the modules' last components, as in PEFT");
    }
}
