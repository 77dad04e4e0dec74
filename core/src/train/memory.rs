//! What a LoRA/QLoRA run will hold in GPU memory, split the way people reason about it:
//! the frozen base, the adapter, its gradients, AdamW's two moments, and the activations
//! of the training pass. `hearth info` prints it; the web app draws it and warns with it.

use super::preference::Objective;
use crate::lora::{LoraConfig, Target};
use crate::model::backward::activation_bytes;
use crate::ops::matmul::{weight_grad_parts, SPLIT_MIN_STEPS};
use crate::model::forward::StateLayout;
use crate::model::{Config, WeightFormat};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MemoryEstimate {
    /// The decoder layers' linear weights in their format, the lm_head in its format, the
    /// norms in f32 (the embedding stays in host memory).
    pub base: u64,
    /// LoRA A and B in f32.
    pub adapter: u64,
    /// The gradients, and on GPUs the scratch of one layer's split parts (TrainPass's
    /// GradSums: a few times a layer's gradients).
    pub gradients: u64,
    /// AdamW's first and second moments.
    pub optimizer: u64,
    /// What the training pass keeps and its scratch.
    pub activations: u64,
    /// The model's own buffers for generation and scoring: the KV cache and a chunk's state.
    pub inference: u64,
}

impl MemoryEstimate {
    pub fn total(&self) -> u64 {
        self.base + self.adapter + self.gradients + self.optimizer + self.activations + self.inference
    }
}

/// WebGPU's default storage binding limit, which splits the lm_head and the logits; the
/// estimates assume it unless the adapter's limit is known.
pub const DEFAULT_BINDING_LIMIT: u64 = 128 << 20;

/// How a model is held for training: the chunk of tokens its forward runs at once and its
/// KV cache (the CLI's: 256 and --ctx; the web app's: 256 and the model's context, at most
/// 2048), the adapter's storage binding limit, and the lm_head's format.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ModelShape {
    pub head_format: WeightFormat,
    pub chunk: usize,
    pub ctx_tokens: usize,
    pub binding_limit: u64,
}

/// Bytes of the base weights on the GPU with the decoder's linear layers in `format` and
/// the lm_head in `head` (`HostWeights::head_format`; f32 when unknown).
pub fn base_bytes(cfg: &Config, format: WeightFormat, head: WeightFormat) -> u64 {
    let linear = cfg.linear_param_count() as f64;
    // norms, biases and head norms, in f32: what is neither a linear layer nor an embedding
    let embeds = cfg.vocab_size * cfg.hidden_size * if cfg.tie_embeddings { 1 } else { 2 };
    let norms = cfg.param_count() - cfg.linear_param_count() - embeds;
    let head = (cfg.vocab_size * cfg.hidden_size) as f64 * head.bytes_per_weight();
    (linear * format.bytes_per_weight() + head) as u64 + 4 * norms as u64
}

/// Trainable parameters of LoRA on `targets` of every layer: r·(in + out) each (fused
/// layers counted once, as the model has them).
pub fn lora_params(cfg: &Config, r: usize, targets: &[Target]) -> usize {
    let targets = Target::for_model(targets, cfg).unwrap_or_else(|_| targets.to_vec());
    let per_layer: usize = targets
        .iter()
        .map(|t| {
            let (out, inp) = t.shape(cfg);
            r * (inp + out)
        })
        .sum();
    cfg.n_layers * per_layer
}

/// The estimate for micro-batches of `tokens` tokens; the sizes of the training pass and
/// of the model's state come from the tables their allocations read.
pub fn estimate(cfg: &Config, format: WeightFormat, lora: &LoraConfig, tokens: usize, checkpointing: bool, model: ModelShape) -> MemoryEstimate {
    let params = 4 * lora_params(cfg, lora.r, &lora.targets) as u64;
    MemoryEstimate {
        base: base_bytes(cfg, format, model.head_format),
        adapter: params,
        gradients: params + split_parts_bytes(params, tokens, cfg.n_layers),
        optimizer: 2 * params,
        activations: activation_bytes(cfg, tokens, lora.r, &lora.targets, checkpointing, model.binding_limit),
        inference: StateLayout::new(cfg, model.chunk, model.ctx_tokens, lora.r, model.binding_limit).bytes(cfg.n_layers),
    }
}

/// The scratch where the GPU kernels put one layer's LoRA gradients as the parts of their
/// split reductions, for micro-batches of `tokens` (none where they do not split them), in
/// parts of the default length. Shorter ones (HEARTH_SPLIT_MIN_STEPS or HEARTH_THIN_SPLIT, or
/// a GPU's tile tuning, which the browser does not run) take more: `hearth info` has no GPU to
/// ask.
fn split_parts_bytes(params: u64, tokens: usize, n_layers: usize) -> u64 {
    match weight_grad_parts(tokens, SPLIT_MIN_STEPS) {
        1 => 0,
        parts => parts as u64 * params / n_layers.max(1) as u64,
    }
}

/// Sequences in a micro-batch of `batch_size`: a preference objective's batch counts pairs,
/// each a chosen and a rejected sequence in the same micro-batch.
pub fn batch_sequences(objective: &Objective, batch_size: usize) -> usize {
    if objective.is_preference() {
        2 * batch_size
    } else {
        batch_size
    }
}
