//! The page's settings form as one JSON object. Its defaults are the CLI's (`hearth train
//! --help`), and the page fills its form from `Settings::default()`, so the two agree.

use hearth_core::lora::{LoraConfig, Target};
use hearth_core::model::{Tokenizer, WeightFormat};
use hearth_core::ops::adamw::AdamwConfig;
use hearth_core::quant::QuantFormat;
use hearth_core::train::data::{DataOptions, Template};
use hearth_core::train::schedule::Schedule;
use hearth_core::train::trainer::{parse_checkpointing, TrainConfig};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// "lora" keeps the base as loaded; "qlora" quantizes it to NF4.
    pub method: String,
    pub r: usize,
    pub alpha: f32,
    pub dropout: f32,
    /// "all-linear" or a comma-separated list such as "q_proj,v_proj".
    pub targets: String,
    pub lr: f32,
    pub weight_decay: f32,
    pub schedule: String,
    pub warmup_ratio: f32,
    pub warmup_steps: usize,
    pub epochs: f32,
    /// 0: train for `epochs`.
    pub max_steps: usize,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub max_seq_len: usize,
    /// "" picks the model's chat template when it has one, else alpaca.
    pub template: String,
    pub train_on_prompt: bool,
    /// Fraction of the records held out for validation.
    pub val_split: f32,
    /// Evaluate every this many steps (0: once per epoch).
    pub eval_steps: usize,
    /// Stop after this many evaluations without a lower validation loss and keep the best
    /// adapter (0: no early stopping).
    pub patience: usize,
    pub seed: u64,
    /// "auto", "on" or "off".
    pub gradient_checkpointing: String,
    /// What the GPU may hold, for the memory warning and automatic checkpointing.
    pub memory_budget_gb: f32,
}

impl Default for Settings {
    fn default() -> Self {
        let t = TrainConfig::default();
        Settings {
            method: "lora".into(),
            r: t.lora.r,
            alpha: t.lora.alpha,
            dropout: t.lora.dropout,
            targets: "all-linear".into(),
            lr: t.adamw.lr,
            weight_decay: t.adamw.weight_decay,
            schedule: t.schedule.name().into(),
            warmup_ratio: t.warmup_ratio,
            warmup_steps: t.warmup_steps,
            epochs: t.epochs,
            max_steps: 0,
            batch_size: t.batch_size,
            grad_accum: t.grad_accum,
            max_seq_len: 512,
            template: String::new(),
            train_on_prompt: false,
            val_split: 0.0,
            eval_steps: 0,
            patience: 0,
            seed: t.seed,
            gradient_checkpointing: "auto".into(),
            memory_budget_gb: t.memory_budget as f32 / (1u64 << 30) as f32,
        }
    }
}

impl Settings {
    pub fn parse(json: &str) -> Result<Self, String> {
        serde_json::from_str(json).map_err(|e| format!("settings: {e}"))
    }

    /// The base format the run trains on: None keeps what was loaded.
    pub fn quant(&self) -> Result<Option<WeightFormat>, String> {
        match self.method.as_str() {
            "lora" => Ok(None),
            "qlora" => Ok(Some(WeightFormat::Quant(QuantFormat::Nf4))),
            other => Err(format!("method \"{other}\": expected lora or qlora")),
        }
    }

    pub fn data_options(&self, tok: &Tokenizer) -> DataOptions {
        let template = match self.template.as_str() {
            "" if tok.chat_template.is_some() => Template::Model,
            "" => Template::Alpaca,
            t => Template::parse(t),
        };
        DataOptions { template, max_seq_len: self.max_seq_len, train_on_prompt: self.train_on_prompt }
    }

    pub fn train_config(&self) -> Result<TrainConfig, String> {
        let targets = Target::parse_list(&self.targets).map_err(|e| e.to_string())?;
        let lora = LoraConfig { r: self.r, alpha: self.alpha, rslora: false, dropout: self.dropout, targets };
        let checkpointing = parse_checkpointing(&self.gradient_checkpointing)
            .ok_or_else(|| format!("gradient checkpointing \"{}\": expected auto, on or off", self.gradient_checkpointing))?;
        let d = TrainConfig::default();
        let cfg = TrainConfig {
            lora,
            adamw: AdamwConfig { lr: self.lr, weight_decay: self.weight_decay, ..d.adamw },
            schedule: Schedule::parse(&self.schedule).map_err(|e| e.to_string())?,
            warmup_steps: self.warmup_steps,
            warmup_ratio: self.warmup_ratio,
            batch_size: self.batch_size,
            grad_accum: self.grad_accum,
            epochs: self.epochs,
            max_steps: (self.max_steps > 0).then_some(self.max_steps),
            seed: self.seed,
            checkpointing,
            memory_budget: self.budget_bytes(),
            ..d
        };
        cfg.validate().map_err(|e| e.to_string())?;
        Ok(cfg)
    }

    pub fn budget_bytes(&self) -> u64 {
        (self.memory_budget_gb.max(0.0) as f64 * (1u64 << 30) as f64) as u64
    }
}
