//! The step loop: an optimizer step runs `grad_accum` micro-batches forward and backward,
//! normalizes by the loss tokens of the whole step, clips, and updates the adapter. Which
//! examples a step sees depends only on (seed, step), so a run resumed from a checkpoint
//! continues exactly as the uninterrupted run would.

use super::batch::{epoch_batches, max_batch_tokens, pack};
use super::data::Example;
use super::optimizer::Optimizer;
use super::preference::{sequence_logps, token_weights, DpoLoss, Objective, PairTerms, PreferenceStats, PreferenceTally, SeqLogp};
use super::schedule::Schedule;
use crate::lora::gpu::GpuAdapter;
use crate::lora::{Adapter, LoraConfig};
use crate::model::backward::{activation_bytes, Dropout, TokenBatch, TrainPass};
use crate::model::Model;
use crate::ops::adamw::AdamwConfig;
use crate::ops::cross_entropy::IGNORE;
use crate::{Error, GpuContext, Result};

/// Everything that shapes a run (the CLI's and the web app's settings).
#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    pub lora: LoraConfig,
    pub adamw: AdamwConfig,
    pub max_grad_norm: f32,
    pub schedule: Schedule,
    /// Warmup in optimizer steps, or as a fraction of all steps when `warmup_steps` is 0.
    pub warmup_steps: usize,
    pub warmup_ratio: f32,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub epochs: f32,
    /// Overrides `epochs` when set.
    pub max_steps: Option<usize>,
    pub seed: u64,
    /// None: on when activations without it would exceed `memory_budget` bytes.
    pub checkpointing: Option<bool>,
    pub memory_budget: u64,
    /// Supervised, or a preference loss on pairs (the examples then come chosen, rejected,
    /// chosen, ...).
    pub objective: Objective,
}

impl Default for TrainConfig {
    /// The CLI's defaults (transformers' Trainer where it has one).
    fn default() -> Self {
        TrainConfig {
            lora: LoraConfig::default(),
            adamw: AdamwConfig { lr: 2e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 },
            max_grad_norm: 1.0,
            schedule: Schedule::Linear,
            warmup_steps: 0,
            warmup_ratio: 0.0,
            batch_size: 4,
            grad_accum: 1,
            epochs: 3.0,
            max_steps: None,
            seed: 42,
            checkpointing: None,
            memory_budget: 4 << 30,
            objective: Objective::Sft,
        }
    }
}

impl TrainConfig {
    /// Checks every value against its range, naming the setting (as the run specification
    /// names it) that is out of it.
    pub fn validate(&self) -> Result<()> {
        self.lora.check()?;
        let a = &self.adamw;
        // (setting, in range, its value for the message, the rule)
        let checks: [(&'static str, bool, String, &str); 13] = [
            ("alpha", self.lora.alpha > 0.0 && self.lora.alpha.is_finite(), self.lora.alpha.to_string(), "must be a positive number"),
            ("lr", a.lr > 0.0 && a.lr.is_finite(), a.lr.to_string(), "must be a positive number"),
            ("beta1", (0.0..1.0).contains(&a.beta1), a.beta1.to_string(), "must be in [0, 1)"),
            ("beta2", (0.0..1.0).contains(&a.beta2), a.beta2.to_string(), "must be in [0, 1)"),
            ("eps", a.eps > 0.0 && a.eps.is_finite(), a.eps.to_string(), "must be a positive number"),
            ("weight_decay", a.weight_decay >= 0.0 && a.weight_decay.is_finite(), a.weight_decay.to_string(), "must be ≥ 0"),
            ("max_grad_norm", self.max_grad_norm >= 0.0 && self.max_grad_norm.is_finite(), self.max_grad_norm.to_string(), "must be ≥ 0 (0: no clipping)"),
            ("warmup_ratio", (0.0..=1.0).contains(&self.warmup_ratio), self.warmup_ratio.to_string(), "must be in [0, 1]"),
            ("batch_size", self.batch_size >= 1, self.batch_size.to_string(), "must be at least 1"),
            ("grad_accum", self.grad_accum >= 1, self.grad_accum.to_string(), "must be at least 1"),
            ("epochs", self.max_steps.is_some() || (self.epochs > 0.0 && self.epochs.is_finite()), self.epochs.to_string(), "must be a positive number"),
            ("max_steps", self.max_steps != Some(0), format!("{:?}", self.max_steps), "must be at least 1"),
            ("memory_budget_gb", self.memory_budget > 0, format!("{} bytes", self.memory_budget), "must be more than 0"),
        ];
        if let Some((setting, _, value, rule)) = checks.into_iter().find(|(_, ok, _, _)| !ok) {
            return Err(Error::invalid_setting(setting, format!("{value} {rule}")));
        }
        match self.objective {
            // (the settings are f32: printed as such)
            Objective::Dpo { beta, .. } if !(beta > 0.0 && beta.is_finite()) => Err(Error::invalid_setting("beta", format!("{} must be a positive number", beta as f32))),
            Objective::Dpo { label_smoothing: e, .. } if !(0.0..0.5).contains(&e) => Err(Error::invalid_setting("label_smoothing", format!("{} must be in [0, 0.5)", e as f32))),
            Objective::Dpo { label_smoothing: e, loss, .. } if e > 0.0 && loss != DpoLoss::Sigmoid => {
                Err(Error::invalid_setting("label_smoothing", format!("{}: label smoothing applies to the sigmoid loss only", e as f32)))
            }
            Objective::Orpo { alpha } if !(alpha > 0.0 && alpha.is_finite()) => Err(Error::invalid_setting("orpo_alpha", format!("{} must be a positive number", alpha as f32))),
            _ => Ok(()),
        }
    }
}

/// The `checkpointing` setting from its spelling in the CLI and the web app: "auto" (None),
/// "on" or "off"; None for anything else.
pub fn parse_checkpointing(s: &str) -> Option<Option<bool>> {
    match s {
        "auto" => Some(None),
        "on" => Some(Some(true)),
        "off" => Some(Some(false)),
        _ => None,
    }
}

/// Where a run stands; with the adapter and the optimizer moments, all a checkpoint needs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrainerState {
    /// Optimizer steps done.
    pub step: usize,
    pub best_eval_loss: Option<f64>,
    /// Evaluations since the best one (early stopping).
    pub evals_since_best: usize,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    pub step: usize,
    pub epoch: f64,
    /// The objective's loss: the mean NLL per loss token over the step's micro-batches
    /// (supervised), or the preference loss, a mean over the step's pairs.
    pub loss: f64,
    pub lr: f32,
    pub grad_norm: f32,
    /// Tokens run through the model in the step.
    pub tokens: usize,
    /// The preference metrics TRL logs (preference objectives only).
    pub preference: Option<PreferenceStats>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvalStats {
    /// The objective's loss (as in [`StepStats`]).
    pub loss: f64,
    /// exp of the mean NLL per loss token (supervised; of the chosen completions for
    /// preference objectives).
    pub perplexity: f64,
    pub tokens: usize,
    pub preference: Option<PreferenceStats>,
}

pub struct Trainer {
    pub cfg: TrainConfig,
    pub model: Model,
    pub state: TrainerState,
    pass: TrainPass,
    opt: Optimizer,
    train: Vec<Example>,
    /// Examples per unit of data: 1, or 2 for a preference pair (chosen, rejected).
    unit: usize,
    /// DPO's reference when the run starts from an adapter: a frozen copy of it (None: the
    /// base, the adapter switched off).
    reference: Option<GpuAdapter>,
    /// Micro-batches per epoch and optimizer steps per epoch.
    batches_per_epoch: usize,
    steps_per_epoch: usize,
    /// Optimizer steps of the whole run, and of the warmup.
    pub total_steps: usize,
    pub warmup: usize,
}

impl Trainer {
    /// Puts `adapter` on `model` and sizes the buffers for the longest micro-batch of
    /// `train` and `eval_sets`.
    pub fn new(ctx: &GpuContext, mut model: Model, adapter: Adapter, cfg: TrainConfig, train: Vec<Example>, eval_sets: &[&[Example]]) -> Result<Self> {
        cfg.validate()?;
        if train.is_empty() {
            return Err(Error::invalid_setting("data", "no training examples"));
        }
        if let Some((limit, why)) = model.cfg.context_limit() {
            let longest = train.iter().chain(eval_sets.iter().flat_map(|s| s.iter())).map(|e| e.tokens.len()).max().unwrap_or(0);
            if longest > limit {
                return Err(Error::invalid_setting("max_seq_len", format!("an example holds {longest} tokens, more than {why}; at most {limit} fits")));
            }
        }
        model.set_adapter(ctx, Some(adapter), "the new adapter")?;
        let unit = if cfg.objective.is_preference() { 2 } else { 1 };
        if !train.len().is_multiple_of(unit) {
            return Err(Error::Shape(format!("{} examples do not make whole preference pairs", train.len())));
        }
        let bs = cfg.batch_size.max(1);
        let mut max_tokens = max_batch_tokens(&train, bs * unit);
        for set in eval_sets {
            max_tokens = max_tokens.max(max_batch_tokens(set, bs * unit));
        }
        let rank = model.adapter.as_ref().map_or(0, |a| a.max_rank());
        let checkpointing = cfg.checkpointing.unwrap_or_else(|| activation_bytes(&model.cfg, max_tokens, rank, &cfg.lora.targets, false, model.binding_limit) > cfg.memory_budget);
        let pass = TrainPass::new(ctx, &model, max_tokens, checkpointing)?;
        let opt = Optimizer::new(ctx, model.adapter.as_ref().expect("just set"), cfg.adamw, cfg.max_grad_norm)?;
        let batches_per_epoch = (train.len() / unit).div_ceil(bs);
        let steps_per_epoch = batches_per_epoch.div_ceil(cfg.grad_accum.max(1));
        let total_steps = match cfg.max_steps {
            Some(s) => s,
            None => ((cfg.epochs as f64 * steps_per_epoch as f64).ceil() as usize).max(1),
        };
        let warmup = if cfg.warmup_steps > 0 { cfg.warmup_steps } else { (cfg.warmup_ratio as f64 * total_steps as f64).ceil() as usize };
        Ok(Trainer { cfg, model, state: TrainerState::default(), pass, opt, train, unit, reference: None, batches_per_epoch, steps_per_epoch, total_steps, warmup })
    }

    /// Whether DPO's reference is a frozen copy of the starting adapter (else the base).
    pub fn has_frozen_reference(&self) -> bool {
        self.reference.is_some()
    }

    /// Makes `adapter` DPO's reference, frozen (a run that continues a
    /// supervised adapter, as TRL's ref_adapter_name does).
    pub fn freeze_reference(&mut self, ctx: &GpuContext, adapter: Adapter) -> Result<()> {
        self.reference = Some(self.model.upload_adapter(ctx, adapter, "the reference adapter")?);
        Ok(())
    }

    pub fn checkpointing(&self) -> bool {
        self.pass.checkpointing
    }

    pub fn max_tokens(&self) -> usize {
        self.pass.max_tokens
    }

    pub fn steps_per_epoch(&self) -> usize {
        self.steps_per_epoch
    }

    pub fn done(&self) -> bool {
        self.state.step >= self.total_steps
    }

    /// Whether the step just taken ends an evaluation period: every `eval_steps` steps
    /// (once per epoch when None) and at the last step.
    pub fn eval_due(&self, eval_steps: Option<usize>) -> bool {
        let every = eval_steps.unwrap_or(self.steps_per_epoch).max(1);
        self.state.step > 0 && (self.state.step.is_multiple_of(every) || self.done())
    }

    /// The micro-batches of optimizer step `step`, packed: each a list of units (examples,
    /// or pairs as chosen then rejected).
    fn step_batches(&self, step: usize) -> Vec<TokenBatch> {
        let epoch = step / self.steps_per_epoch;
        let group = step % self.steps_per_epoch;
        let batches = epoch_batches(self.train.len() / self.unit, self.cfg.batch_size, self.cfg.seed, epoch);
        let accum = self.cfg.grad_accum.max(1);
        batches[group * accum..((group + 1) * accum).min(self.batches_per_epoch)]
            .iter()
            .map(|units| pack(&units.iter().flat_map(|&u| &self.train[u * self.unit..(u + 1) * self.unit]).collect::<Vec<_>>()))
            .collect()
    }

    fn dropout(&self, step: usize, j: usize) -> Dropout {
        let seed = (self.cfg.seed as u32).wrapping_mul(0x9E37_79B9) ^ ((step * 64 + j) as u32);
        Dropout { p: self.cfg.lora.dropout, seed }
    }

    /// Compiles the GPU kernels of a step before the first one (the page shows this as its
    /// own stage, so that the first step's time is the step's): one forward and backward of
    /// the next step's first micro-batch into the gradient buffers, which that step's first
    /// micro-batch then overwrites. Nothing the run keeps changes.
    pub async fn prepare_kernels(&mut self, ctx: &GpuContext) -> Result<()> {
        let step = self.state.step;
        let Some(first) = self.step_batches(step).into_iter().next() else { return Ok(()) };
        let scale = 1.0 / first.counted().max(1) as f32;
        self.pass.forward_backward(ctx, &self.model, &first, scale, self.dropout(step, 0), false).await?;
        Ok(())
    }

    /// One optimizer step.
    pub async fn step(&mut self, ctx: &GpuContext) -> Result<StepStats> {
        let step = self.state.step;
        let batches = self.step_batches(step);
        let tokens = batches.iter().map(|b| b.len()).sum();
        let (loss, preference) = if self.cfg.objective.is_preference() {
            let stats = self.preference_step(ctx, step, &batches).await?;
            (stats.loss, Some(stats))
        } else {
            let counted: usize = batches.iter().map(|b| b.counted()).sum();
            let scale = 1.0 / counted.max(1) as f32;
            let mut total = 0.0;
            for (j, b) in batches.iter().enumerate() {
                total += self.pass.forward_backward(ctx, &self.model, b, scale, self.dropout(step, j), j > 0).await?;
            }
            (total / counted.max(1) as f64, None)
        };
        if !loss.is_finite() {
            return Err(Error::Diverged { step: step + 1, detail: format!("the loss is {loss}; the adapter was not updated with it") });
        }
        let lr = self.cfg.schedule.lr(self.cfg.adamw.lr, step, self.warmup, self.total_steps);
        let adapter = self.model.adapter.as_ref().expect("set in new");
        let grads = self.pass.grad_arena.as_ref().expect("a pass made with the adapter has gradients");
        let grad_norm = self.opt.step(ctx, adapter, grads, lr).await?;
        if !grad_norm.is_finite() {
            return Err(Error::Diverged { step: step + 1, detail: format!("the gradient norm is {grad_norm}; the adapter is no longer usable") });
        }
        self.state.step += 1;
        let epoch = self.state.step as f64 / self.steps_per_epoch as f64;
        Ok(StepStats { step: self.state.step, epoch, loss, lr, grad_norm, tokens, preference })
    }

    /// The reference's log-probability of each sequence of `batch`: the model with the
    /// frozen starting adapter, or with none.
    async fn reference_logps(&mut self, ctx: &GpuContext, batch: &TokenBatch) -> Result<Vec<SeqLogp>> {
        let policy = self.model.swap_adapter(self.reference.take());
        let nll = self.pass.forward_token_losses(ctx, &self.model, batch).await;
        self.reference = self.model.swap_adapter(policy);
        Ok(sequence_logps(batch, &nll?))
    }

    /// The gradients of the preference loss over the step's pairs, and its metrics.
    async fn preference_step(&mut self, ctx: &GpuContext, step: usize, batches: &[TokenBatch]) -> Result<PreferenceStats> {
        let objective = self.cfg.objective.clone();
        let pairs: usize = batches.iter().map(|b| b.seg.last().map_or(0, |&s| s as usize + 1) / 2).sum();
        // the chosen completions' loss tokens over the step (ORPO's NLL is a mean over them)
        let chosen_tokens: usize = batches.iter().map(|b| b.seg.iter().zip(&b.targets).filter(|&(&s, &t)| s % 2 == 0 && t != IGNORE).count()).sum();
        let mut tally = PreferenceTally::default();
        for (j, b) in batches.iter().enumerate() {
            let reference = if objective.needs_reference() { Some(self.reference_logps(ctx, b).await?) } else { None };
            let dropout = self.dropout(step, j);
            let mut weights_of = |nll: &[f32]| {
                let terms = score_pairs(&objective, b, nll, reference.as_deref(), &mut tally);
                token_weights(b, &terms, pairs, &objective, chosen_tokens)
            };
            self.pass.forward_backward_weighted(ctx, &self.model, b, &mut weights_of, dropout, j > 0).await?;
        }
        Ok(tally.stats(&objective))
    }

    /// The preference loss and metrics of `pairs` (chosen, rejected, ...) with the current
    /// adapter, in micro-batches of `batch_size` pairs.
    async fn evaluate_pairs(&mut self, ctx: &GpuContext, examples: &[Example]) -> Result<EvalStats> {
        let objective = self.cfg.objective.clone();
        let mut tally = PreferenceTally::default();
        let mut tokens = 0;
        for chunk in examples.chunks(2 * self.cfg.batch_size.max(1)) {
            let b = pack(&chunk.iter().collect::<Vec<_>>());
            let reference = if objective.needs_reference() { Some(self.reference_logps(ctx, &b).await?) } else { None };
            let nll = self.pass.forward_token_losses(ctx, &self.model, &b).await?;
            score_pairs(&objective, &b, &nll, reference.as_deref(), &mut tally);
            tokens += b.len();
        }
        let stats = tally.stats(&objective);
        if !stats.loss.is_finite() {
            return Err(Error::NotFinite(format!("the evaluation loss is {}", stats.loss)));
        }
        Ok(EvalStats { loss: stats.loss, perplexity: tally.chosen_nll().exp(), tokens, preference: Some(stats) })
    }

    /// The objective's loss on `examples` with the current adapter (no dropout): the mean
    /// NLL per loss token, or the preference loss and metrics of pairs.
    pub async fn evaluate(&mut self, ctx: &GpuContext, examples: &[Example]) -> Result<EvalStats> {
        let stats = if self.cfg.objective.is_preference() {
            self.evaluate_pairs(ctx, examples).await
        } else {
            evaluate(ctx, &self.model, &mut self.pass, examples, self.cfg.batch_size).await
        };
        stats.map_err(|e| match e {
            Error::NotFinite(detail) => Error::Diverged { step: self.state.step, detail },
            other => other,
        })
    }

    /// Records an evaluation for early stopping; true when it is the best so far.
    pub fn record_eval(&mut self, loss: f64) -> bool {
        let best = self.state.best_eval_loss.is_none_or(|b| loss < b);
        if best {
            self.state.best_eval_loss = Some(loss);
            self.state.evals_since_best = 0;
        } else {
            self.state.evals_since_best += 1;
        }
        best
    }

    /// The adapter as trained so far.
    pub async fn adapter(&mut self, ctx: &GpuContext) -> Result<Adapter> {
        Ok(self.model.adapter.as_mut().expect("set in new").download(ctx).await?.clone())
    }

    pub async fn optimizer_moments(&self, ctx: &GpuContext) -> Result<Vec<(Vec<f32>, Vec<f32>)>> {
        self.opt.moments(ctx).await
    }

    /// Continues from a checkpoint's adapter weights, optimizer moments and state.
    pub fn restore(&mut self, ctx: &GpuContext, adapter: &Adapter, moments: &[(Vec<f32>, Vec<f32>)], state: TrainerState) -> Result<()> {
        self.load_adapter_weights(ctx, adapter)?;
        self.opt.set_moments(ctx, moments, state.step as u32)?;
        self.state = state;
        Ok(())
    }

    /// Puts `adapter`'s weights on the model; its shapes must be this run's.
    pub fn load_adapter_weights(&mut self, ctx: &GpuContext, adapter: &Adapter) -> Result<()> {
        let gpu = self.model.adapter.as_mut().expect("set in new");
        if adapter.tensors.len() != gpu.tensors.len() {
            return Err(Error::Shape(format!("the checkpoint's adapter has {} tensors, this run's has {}", adapter.tensors.len(), gpu.tensors.len())));
        }
        for ((h, g), cur) in adapter.tensors.iter().zip(&gpu.tensors).zip(&gpu.adapter.tensors) {
            if (h.layer, h.target, h.rank, h.d_in, h.d_out) != (cur.layer, cur.target, cur.rank, cur.d_in, cur.d_out) {
                return Err(Error::Shape(format!("the checkpoint's {} does not match this run's adapter (r, targets)", h.peft_prefix())));
            }
            ctx.write_f32(&g.a, &h.a);
            ctx.write_f32(&g.b, &h.b);
        }
        Ok(())
    }
}

/// Mean NLL per loss token of `examples` on `model` (its adapter included), in micro-batches
/// of `batch_size` examples.
pub async fn evaluate(ctx: &GpuContext, model: &Model, pass: &mut TrainPass, examples: &[Example], batch_size: usize) -> Result<EvalStats> {
    let mut total = 0.0;
    let mut tokens = 0;
    for chunk in examples.chunks(batch_size.max(1)) {
        let b = pack(&chunk.iter().collect::<Vec<_>>());
        total += pass.forward_loss(ctx, model, &b).await?;
        tokens += b.counted();
    }
    if tokens == 0 {
        return Err(Error::invalid_setting("val_data", "the evaluation data has no loss tokens"));
    }
    let loss = total / tokens as f64;
    if !loss.is_finite() {
        return Err(Error::NotFinite(format!("the evaluation loss is {loss}")));
    }
    Ok(EvalStats { loss, perplexity: loss.exp(), tokens, preference: None })
}

/// Each pair's terms in `batch` (chosen, rejected, ...) from the tokens' NLLs, added to
/// `tally`.
fn score_pairs(objective: &Objective, batch: &TokenBatch, nll: &[f32], reference: Option<&[SeqLogp]>, tally: &mut PreferenceTally) -> Vec<PairTerms> {
    let policy = sequence_logps(batch, nll);
    policy
        .chunks(2)
        .enumerate()
        .map(|(i, p)| {
            let t = objective.pair_terms(p[0], p[1], reference.map(|r| (r[2 * i], r[2 * i + 1])));
            tally.add(&t, p[0]);
            t
        })
        .collect()
}
