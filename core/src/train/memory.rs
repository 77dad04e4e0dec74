//! What a LoRA/QLoRA run will hold in GPU memory, split the way people reason about it:
//! the frozen base, the adapter, its gradients, AdamW's two moments, and the activations
//! of the training pass. `hearth info` prints it; the web app draws it and warns with it.

use crate::lora::{LoraConfig, Target};
use crate::model::backward::activation_bytes;
use crate::model::{Config, WeightFormat};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MemoryEstimate {
    /// Linear layers in their format; embeddings and norms in f32.
    pub base: u64,
    /// LoRA A and B in f32.
    pub adapter: u64,
    pub gradients: u64,
    /// AdamW's first and second moments.
    pub optimizer: u64,
    pub activations: u64,
}

impl MemoryEstimate {
    pub fn total(&self) -> u64 {
        self.base + self.adapter + self.gradients + self.optimizer + self.activations
    }
}

/// Bytes of the base weights with the linear layers in `format`.
pub fn base_bytes(cfg: &Config, format: WeightFormat) -> u64 {
    let linear = cfg.linear_param_count() as f64;
    let rest = cfg.param_count() as f64 - linear;
    (linear * format.bytes_per_weight() + rest * 4.0) as u64
}

/// Trainable parameters of LoRA on `targets` of every layer: r·(in + out) each.
pub fn lora_params(cfg: &Config, r: usize, targets: &[Target]) -> usize {
    let per_layer: usize = targets
        .iter()
        .map(|t| {
            let (out, inp) = t.shape(cfg);
            r * (inp + out)
        })
        .sum();
    cfg.n_layers * per_layer
}

/// The estimate for micro-batches of `tokens` tokens.
pub fn estimate(cfg: &Config, format: WeightFormat, lora: &LoraConfig, tokens: usize, checkpointing: bool) -> MemoryEstimate {
    let params = lora_params(cfg, lora.r, &lora.targets) as u64;
    MemoryEstimate {
        base: base_bytes(cfg, format),
        adapter: 4 * params,
        gradients: 4 * params,
        optimizer: 8 * params,
        activations: activation_bytes(cfg, tokens, lora.r, checkpointing),
    }
}
