//! The settings of a fine-tuning run, defined once for every front end: [`RunSettings`] is
//! what the web page sends as JSON and what the CLI's flags fill, with the CLI's defaults
//! (`RunSettings::default`); [`SCHEMA`] gives each setting's help text and range, from which
//! the CLI builds its flags (`--kebab-case` of the name) and the page its form. To add a
//! setting: a field here, its line in [`SCHEMA`], and its use in [`RunSettings::run_spec`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::data::{DataOptions, Template};
use super::preference::{DpoLoss, Objective};
use super::run::RunSpec;
use super::schedule::Schedule;
use super::trainer::{parse_checkpointing, TrainConfig};
use crate::lora::{LoraConfig, Target};
use crate::model::{Tokenizer, WeightFormat};
use crate::ops::adamw::AdamwConfig;
use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunSettings {
    pub method: String,
    pub qlora_format: String,
    pub r: usize,
    pub alpha: f32,
    pub rslora: bool,
    pub dropout: f32,
    pub targets: String,
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub schedule: String,
    pub warmup_steps: usize,
    pub warmup_ratio: f32,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub epochs: f32,
    pub max_steps: usize,
    pub max_grad_norm: f32,
    pub gradient_checkpointing: String,
    pub memory_budget_gb: f32,
    pub seed: u64,
    pub template: String,
    pub max_seq_len: usize,
    pub train_on_prompt: bool,
    pub thinking: String,
    pub val_split: f32,
    pub eval_steps: usize,
    pub patience: usize,
    pub save_steps: usize,
    pub objective: String,
    pub beta: f32,
    pub dpo_loss: String,
    pub label_smoothing: f32,
    pub orpo_alpha: f32,
}

impl Default for RunSettings {
    /// The defaults of `hearth train` and of the page (transformers' Trainer and PEFT's
    /// where they have one).
    fn default() -> Self {
        let t = TrainConfig::default();
        RunSettings {
            method: "lora".into(),
            qlora_format: "nf4".into(),
            r: t.lora.r,
            alpha: t.lora.alpha,
            rslora: t.lora.rslora,
            dropout: t.lora.dropout,
            targets: "all-linear".into(),
            lr: t.adamw.lr,
            beta1: t.adamw.beta1,
            beta2: t.adamw.beta2,
            eps: t.adamw.eps,
            weight_decay: t.adamw.weight_decay,
            schedule: t.schedule.name().into(),
            warmup_steps: t.warmup_steps,
            warmup_ratio: t.warmup_ratio,
            batch_size: t.batch_size,
            grad_accum: t.grad_accum,
            epochs: t.epochs,
            max_steps: 0,
            max_grad_norm: t.max_grad_norm,
            gradient_checkpointing: "auto".into(),
            memory_budget_gb: t.memory_budget as f32 / (1u64 << 30) as f32,
            seed: t.seed,
            template: String::new(),
            max_seq_len: 512,
            train_on_prompt: false,
            thinking: "default".into(),
            val_split: 0.0,
            eval_steps: 0,
            patience: 0,
            save_steps: 0,
            objective: "sft".into(),
            beta: 0.1,
            dpo_loss: "sigmoid".into(),
            label_smoothing: 0.0,
            orpo_alpha: 0.1,
        }
    }
}

/// "default", "on" or "off" as enable_thinking (None: the template's default).
pub fn parse_thinking(s: &str) -> Result<Option<bool>> {
    match s {
        "default" => Ok(None),
        "on" => Ok(Some(true)),
        "off" => Ok(Some(false)),
        other => Err(Error::invalid_setting("thinking", format!("\"{other}\": expected default, on or off"))),
    }
}

/// What kind of value a setting takes, and its range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    /// A whole number ≥ `min`.
    Int { min: u64 },
    /// A number in the range; `open` ends are excluded.
    Float { min: f64, min_open: bool, max: Option<f64>, max_open: bool },
    Bool,
    Choice(&'static [&'static str]),
    Text,
}

/// One setting: its field name in [`RunSettings`] (and JSON; the CLI's flag is its
/// kebab-case), a short label for forms, the help text and its kind.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Setting {
    pub name: &'static str,
    pub label: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    /// Where it belongs: "adapter", "optimizer", "schedule", "data", "evaluation" or
    /// "objective".
    pub group: &'static str,
}

const fn int(min: u64) -> Kind {
    Kind::Int { min }
}

/// [min, max] or with open ends: `float(0.0, true, None, false)` is (0, ∞).
const fn float(min: f64, min_open: bool, max: Option<f64>, max_open: bool) -> Kind {
    Kind::Float { min, min_open, max, max_open }
}

const POSITIVE: Kind = float(0.0, true, None, false);
const NON_NEGATIVE: Kind = float(0.0, false, None, false);
const UNIT_OPEN: Kind = float(0.0, false, Some(1.0), true);

/// Every setting, in the order forms show them.
pub const SCHEMA: &[Setting] = &[
    Setting { name: "method", label: "method", group: "adapter", kind: Kind::Choice(&["lora", "qlora"]),
        help: "lora keeps the base in the file's precision; qlora quantizes it (to the QLoRA format)" },
    Setting { name: "qlora_format", label: "QLoRA format", group: "adapter", kind: Kind::Choice(&["nf4", "q4_0", "q4_1", "q8_0"]),
        help: "What qlora quantizes the base to: NF4 with double quantization (bitsandbytes'), or llama.cpp's Q4_0, Q4_1 or Q8_0" },
    Setting { name: "r", label: "rank r", group: "adapter", kind: int(1), help: "LoRA rank" },
    Setting { name: "alpha", label: "alpha", group: "adapter", kind: POSITIVE, help: "LoRA alpha: the update is scaled by alpha/r" },
    Setting { name: "rslora", label: "rsLoRA", group: "adapter", kind: Kind::Bool, help: "Scale by alpha/√r (rsLoRA)" },
    Setting { name: "dropout", label: "LoRA dropout", group: "adapter", kind: UNIT_OPEN, help: "Dropout on the adapter's input" },
    Setting { name: "targets", label: "target modules", group: "adapter", kind: Kind::Text,
        help: "Layers to adapt: all-linear, or names from q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj" },
    Setting { name: "lr", label: "learning rate", group: "optimizer", kind: POSITIVE, help: "AdamW's peak learning rate" },
    Setting { name: "beta1", label: "beta1", group: "optimizer", kind: UNIT_OPEN, help: "AdamW's first-moment decay" },
    Setting { name: "beta2", label: "beta2", group: "optimizer", kind: UNIT_OPEN, help: "AdamW's second-moment decay" },
    Setting { name: "eps", label: "epsilon", group: "optimizer", kind: POSITIVE, help: "AdamW's epsilon" },
    Setting { name: "weight_decay", label: "weight decay", group: "optimizer", kind: NON_NEGATIVE, help: "AdamW's decoupled weight decay" },
    Setting { name: "max_grad_norm", label: "max gradient norm", group: "optimizer", kind: NON_NEGATIVE,
        help: "Clip the global gradient norm to this (0: no clipping)" },
    Setting { name: "schedule", label: "schedule", group: "schedule", kind: Kind::Choice(&["linear", "cosine", "constant"]),
        help: "The learning rate after the warmup: linear or cosine decay to 0, or constant" },
    Setting { name: "warmup_ratio", label: "warmup ratio", group: "schedule", kind: float(0.0, false, Some(1.0), false),
        help: "Warmup as a fraction of all steps" },
    Setting { name: "warmup_steps", label: "warmup steps", group: "schedule", kind: int(0),
        help: "Warmup in optimizer steps (overrides the warmup ratio when > 0)" },
    Setting { name: "epochs", label: "epochs", group: "schedule", kind: POSITIVE, help: "Passes over the training data" },
    Setting { name: "max_steps", label: "max steps (0: epochs)", group: "schedule", kind: int(0),
        help: "Stop after this many optimizer steps (overrides the epochs when > 0)" },
    Setting { name: "batch_size", label: "batch size", group: "schedule", kind: int(1),
        help: "Examples per micro-batch (concatenated without padding)" },
    Setting { name: "grad_accum", label: "gradient accumulation", group: "schedule", kind: int(1),
        help: "Micro-batches per optimizer step" },
    Setting { name: "seed", label: "seed", group: "schedule", kind: int(0),
        help: "Seeds the adapter's initialization, the data order, dropout and the validation split" },
    Setting { name: "gradient_checkpointing", label: "gradient checkpointing", group: "schedule", kind: Kind::Choice(&["auto", "on", "off"]),
        help: "Recompute activations per layer in the backward: auto (on when the activations would pass the memory budget), on or off" },
    Setting { name: "memory_budget_gb", label: "GPU memory budget (GiB)", group: "schedule", kind: POSITIVE,
        help: "Activation memory above which auto turns gradient checkpointing on" },
    Setting { name: "template", label: "template", group: "data", kind: Kind::Text,
        help: "alpaca, chatml, model (the model's chat template) or a custom template with {field} placeholders whose last placeholder is the response; empty: model when the model has a chat template, else alpaca" },
    Setting { name: "max_seq_len", label: "max sequence length", group: "data", kind: int(2),
        help: "Examples longer than this many tokens are cut (and counted)" },
    Setting { name: "train_on_prompt", label: "loss on the prompt too", group: "data", kind: Kind::Bool,
        help: "Compute the loss on the prompt tokens too (default: the response only)" },
    Setting { name: "thinking", label: "thinking blocks", group: "data", kind: Kind::Choice(&["default", "on", "off"]),
        help: "enable_thinking for chat templates that read it (Qwen3): default (the template's own), on or off" },
    Setting { name: "val_split", label: "validation split", group: "evaluation", kind: UNIT_OPEN,
        help: "Hold out this fraction of the records for validation" },
    Setting { name: "eval_steps", label: "evaluate every (0: epoch)", group: "evaluation", kind: int(0),
        help: "Evaluate every this many steps (0: every epoch, when there is validation data)" },
    Setting { name: "patience", label: "early-stopping patience (0: off)", group: "evaluation", kind: int(0),
        help: "Stop when this many evaluations in a row do not lower the best validation loss, and keep the best adapter (0: off)" },
    Setting { name: "save_steps", label: "checkpoint every (0: never)", group: "evaluation", kind: int(0),
        help: "Write a checkpoint every this many steps (0: none)" },
    Setting { name: "objective", label: "objective", group: "objective", kind: Kind::Choice(&["sft", "dpo", "orpo"]),
        help: "sft: learn the responses; dpo or orpo: learn to prefer each record's chosen completion to its rejected one (records with prompt, chosen, rejected)" },
    Setting { name: "beta", label: "DPO beta", group: "objective", kind: POSITIVE,
        help: "DPO: how far the adapter may move from the reference (smaller: further)" },
    Setting { name: "dpo_loss", label: "DPO loss", group: "objective", kind: Kind::Choice(&["sigmoid", "ipo", "hinge"]),
        help: "DPO's loss, as TRL defines it: sigmoid (the DPO paper's), ipo or hinge" },
    Setting { name: "label_smoothing", label: "DPO label smoothing", group: "objective", kind: float(0.0, false, Some(0.5), true),
        help: "DPO sigmoid: the share of pairs assumed mislabeled (conservative DPO; 0: off)" },
    Setting { name: "orpo_alpha", label: "ORPO alpha", group: "objective", kind: POSITIVE,
        help: "ORPO: the weight of the odds-ratio term next to the chosen completions' NLL (TRL's beta)" },
];

impl RunSettings {
    /// Settings from the page's JSON; unknown keys are refused, missing ones take their
    /// default.
    pub fn from_json(text: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(text).map_err(|e| Error::bad_file("the settings", e.to_string()).with_source(e))?;
        Self::from_value(v)
    }

    pub fn from_value(v: Value) -> Result<Self> {
        if let Some(key) = v.as_object().and_then(|o| o.keys().find(|k| !SCHEMA.iter().any(|s| s.name == k.as_str()))) {
            return Err(Error::bad_file("the settings", format!("unknown setting \"{key}\"")));
        }
        serde_json::from_value(v).map_err(|e| Error::bad_file("the settings", e.to_string()).with_source(e))
    }

    /// The settings as a JSON object, numbers as written: through text, so that an f32 reads
    /// 2e-4 and not 2.0000000949949026e-4 (as the page, the CLI's help and messages show it).
    pub fn to_json(&self) -> Value {
        serde_json::from_str(&serde_json::to_string(self).expect("json")).expect("json")
    }

    /// Checks every setting against its range in [`SCHEMA`], naming the first that is out.
    pub fn validate(&self) -> Result<()> {
        let values = self.to_json();
        for s in SCHEMA {
            let v = &values[s.name];
            let ok = match s.kind {
                Kind::Int { min } => v.as_u64().is_some_and(|x| x >= min),
                Kind::Float { min, min_open, max, max_open } => v.as_f64().is_some_and(|x| {
                    x.is_finite()
                        && if min_open { x > min } else { x >= min }
                        && max.is_none_or(|m| if max_open { x < m } else { x <= m })
                }),
                Kind::Bool => v.is_boolean(),
                Kind::Choice(options) => v.as_str().is_some_and(|x| options.contains(&x)),
                Kind::Text => v.is_string(),
            };
            if !ok {
                return Err(Error::invalid_setting(s.name, format!("{v} {}", describe(s.kind))));
            }
        }
        Ok(())
    }

    /// The base format the run trains on: None keeps the loaded one (lora), the QLoRA format
    /// for qlora.
    pub fn quant(&self) -> Result<Option<WeightFormat>> {
        match self.method.as_str() {
            "lora" => Ok(None),
            "qlora" => WeightFormat::parse(&self.qlora_format).map(Some).map_err(|_| Error::invalid_setting("qlora_format", format!("\"{}\": expected nf4, q4_0, q4_1 or q8_0", self.qlora_format))),
            other => Err(Error::invalid_setting("method", format!("\"{other}\": expected lora or qlora"))),
        }
    }

    /// How records become tokens for `tok`'s model.
    pub fn data_options(&self, tok: &Tokenizer) -> Result<DataOptions> {
        Ok(DataOptions {
            template: Template::resolve(&self.template, tok),
            max_seq_len: self.max_seq_len,
            train_on_prompt: self.train_on_prompt,
            enable_thinking: parse_thinking(&self.thinking)?,
        })
    }

    pub fn train_config(&self) -> Result<TrainConfig> {
        self.validate()?;
        let targets = Target::parse_list(&self.targets)?;
        let checkpointing = parse_checkpointing(&self.gradient_checkpointing).expect("validated");
        let cfg = TrainConfig {
            lora: LoraConfig { r: self.r, alpha: self.alpha, rslora: self.rslora, dropout: self.dropout, targets },
            adamw: AdamwConfig { lr: self.lr, beta1: self.beta1, beta2: self.beta2, eps: self.eps, weight_decay: self.weight_decay },
            max_grad_norm: self.max_grad_norm,
            schedule: Schedule::parse(&self.schedule)?,
            warmup_steps: self.warmup_steps,
            warmup_ratio: self.warmup_ratio,
            batch_size: self.batch_size,
            grad_accum: self.grad_accum,
            epochs: self.epochs,
            max_steps: (self.max_steps > 0).then_some(self.max_steps),
            seed: self.seed,
            checkpointing,
            memory_budget: self.budget_bytes(),
            objective: self.objective()?,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The run specification for `tok`'s model.
    pub fn run_spec(&self, tok: &Tokenizer) -> Result<RunSpec> {
        let spec = RunSpec {
            train: self.train_config()?,
            data: self.data_options(tok)?,
            val_split: self.val_split,
            eval_steps: (self.eval_steps > 0).then_some(self.eval_steps),
            patience: (self.patience > 0).then_some(self.patience),
            save_steps: (self.save_steps > 0).then_some(self.save_steps),
        };
        spec.validate()?;
        Ok(spec)
    }

    /// What the run optimizes.
    pub fn objective(&self) -> Result<Objective> {
        match self.objective.as_str() {
            "sft" => Ok(Objective::Sft),
            "dpo" => Ok(Objective::Dpo { beta: self.beta as f64, loss: DpoLoss::parse(&self.dpo_loss)?, label_smoothing: self.label_smoothing as f64 }),
            "orpo" => Ok(Objective::Orpo { alpha: self.orpo_alpha as f64 }),
            other => Err(Error::invalid_setting("objective", format!("\"{other}\": expected sft, dpo or orpo"))),
        }
    }

    pub fn budget_bytes(&self) -> u64 {
        (self.memory_budget_gb.max(0.0) as f64 * (1u64 << 30) as f64) as u64
    }
}

/// A kind's rule, for messages: "must be at least 1", "must be in [0, 1)".
pub fn describe(kind: Kind) -> String {
    match kind {
        Kind::Int { min } => format!("must be a whole number ≥ {min}"),
        Kind::Float { min: 0.0, min_open: true, max: None, .. } => "must be a positive number".into(),
        Kind::Float { min, min_open, max: None, .. } => format!("must be a number {} {min}", if min_open { ">" } else { "≥" }),
        Kind::Float { min, min_open, max: Some(max), max_open } => {
            format!("must be in {}{min}, {max}{}", if min_open { "(" } else { "[" }, if max_open { ")" } else { "]" })
        }
        Kind::Bool => "must be true or false".into(),
        Kind::Choice(options) => format!("must be one of {}", options.join(", ")),
        Kind::Text => "must be text".into(),
    }
}

/// The schema as JSON, for forms: [{name, label, help, group, kind, min, max, choices,
/// default}].
pub fn schema_json() -> Value {
    let defaults = RunSettings::default().to_json();
    let items: Vec<Value> = SCHEMA
        .iter()
        .map(|s| {
            let mut o = serde_json::json!({ "name": s.name, "label": s.label, "help": s.help, "group": s.group, "default": defaults[s.name] });
            match s.kind {
                Kind::Int { min } => {
                    o["kind"] = "int".into();
                    o["min"] = min.into();
                }
                Kind::Float { min, max, .. } => {
                    o["kind"] = "float".into();
                    o["min"] = min.into();
                    o["max"] = max.into();
                }
                Kind::Bool => o["kind"] = "bool".into(),
                Kind::Choice(options) => {
                    o["kind"] = "choice".into();
                    o["choices"] = options.into();
                }
                Kind::Text => o["kind"] = "text".into(),
            }
            o
        })
        .collect();
    Value::Array(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_has_one_schema_entry_and_the_defaults_pass() {
        let fields = RunSettings::default().to_json();
        let names: Vec<&str> = SCHEMA.iter().map(|s| s.name).collect();
        let mut keys: Vec<&str> = fields.as_object().unwrap().keys().map(String::as_str).collect();
        let mut sorted = names.clone();
        sorted.sort();
        keys.sort();
        assert_eq!(keys, sorted, "RunSettings' fields and SCHEMA's names");
        RunSettings::default().validate().unwrap();
        RunSettings::default().train_config().unwrap();
    }

    #[test]
    fn unknown_and_out_of_range_settings_are_named() {
        let e = RunSettings::from_json(r#"{"learning_rate": 0.1}"#).unwrap_err();
        assert!(e.to_string().contains("learning_rate"), "{e}");
        let s = RunSettings::from_json(r#"{"lr": 0.1, "patience": 2}"#).unwrap();
        assert_eq!((s.lr, s.patience, s.r), (0.1, 2, RunSettings::default().r));
        for (json, name) in [
            (r#"{"r": 0}"#, "r"),
            (r#"{"dropout": 1.0}"#, "dropout"),
            (r#"{"lr": 0}"#, "lr"),
            (r#"{"warmup_ratio": 1.5}"#, "warmup_ratio"),
            (r#"{"schedule": "step"}"#, "schedule"),
            (r#"{"method": "dora"}"#, "method"),
            (r#"{"max_seq_len": 1}"#, "max_seq_len"),
            (r#"{"val_split": 1}"#, "val_split"),
            (r#"{"gradient_checkpointing": "maybe"}"#, "gradient_checkpointing"),
        ] {
            match RunSettings::from_json(json).unwrap().validate() {
                Err(Error::InvalidSetting { setting, .. }) => assert_eq!(setting, name, "{json}"),
                other => panic!("{json}: {other:?}"),
            }
        }
    }
}
