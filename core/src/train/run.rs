//! The run engine: one state machine that owns a whole fine-tuning run, for every front end.
//! Given the run's settings, its data records and a model, it splits and prepares the data,
//! makes (or takes) the adapter, resumes from a checkpoint, and steps; after each step it
//! evaluates when due, keeps the best adapter for early stopping, stops early, catches a
//! diverged loss, says when a checkpoint is due and what it holds. It reports all of that as
//! [`Event`]s: the CLI and the web worker render them and store the bytes it hands out
//! (files on disk, browser storage). Nothing here touches files.

use super::checkpoint;
use super::data::{split_records, DataOptions, DataStats, Example, Record};
use super::preference::prepare_examples;
use super::trainer::{EvalStats, StepStats, TrainConfig, Trainer};
use crate::lora::{peft, Adapter};
use crate::model::{Model, Tokenizer};
use crate::{Error, GpuContext, Result};

/// A checkpoint's copy of the best adapter so far (early stopping), so that a resumed run
/// still ends with it.
pub const BEST_WEIGHTS_FILE: &str = "best_adapter_model.safetensors";

/// Everything that shapes a run.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSpec {
    pub train: TrainConfig,
    pub data: DataOptions,
    /// Fraction of the records held out for validation when no separate validation records
    /// are given.
    pub val_split: f32,
    /// Evaluate every this many steps (None: once per epoch), and at the last step.
    pub eval_steps: Option<usize>,
    /// Stop after this many evaluations without a lower validation loss, and end with the
    /// adapter of the best one (None: no early stopping).
    pub patience: Option<usize>,
    /// A checkpoint is due every this many steps (None: never; a front end may still take
    /// one whenever it likes, e.g. on Ctrl-C).
    pub save_steps: Option<usize>,
}

impl RunSpec {
    /// Checks every value against its range, naming the setting that is out of it. `Run::new`
    /// calls it; a front end may call it earlier, before loading anything.
    pub fn validate(&self) -> Result<()> {
        self.train.validate()?;
        let positive = |setting: &'static str, v: Option<usize>| match v {
            Some(0) => Err(Error::invalid_setting(setting, "must be at least 1")),
            _ => Ok(()),
        };
        positive("eval_steps", self.eval_steps)?;
        positive("patience", self.patience)?;
        positive("save_steps", self.save_steps)?;
        if self.data.max_seq_len < 2 {
            return Err(Error::invalid_setting("max_seq_len", format!("{} must be at least 2 (a prompt token and a response token)", self.data.max_seq_len)));
        }
        if !(0.0..1.0).contains(&self.val_split) {
            return Err(Error::invalid_setting("val_split", format!("{} must be in [0, 1)", self.val_split)));
        }
        Ok(())
    }
}

/// What happened in one [`Run::advance`].
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Step(StepStats),
    /// The validation loss after `step`; `best`: the lowest so far.
    Eval { step: usize, stats: EvalStats, best: bool },
    /// The front end should store [`Run::checkpoint`]'s files now.
    CheckpointDue { step: usize },
    /// `evals_since_best` evaluations passed without improvement: the run is over, and the
    /// model holds the best adapter again.
    EarlyStop { step: usize, evals_since_best: usize },
    /// The loss or the gradient at optimizer step `step` was NaN or infinite: the run is
    /// over. `last_good_checkpoint`: the latest checkpoint taken from weights before the
    /// divergence, if any.
    Diverged { step: usize, detail: String, last_good_checkpoint: Option<usize> },
    /// The run is over (all its steps, or an early stop).
    Done { step: usize, early_stopped: bool },
}

pub struct Run {
    pub trainer: Trainer,
    pub spec: RunSpec,
    pub train_stats: DataStats,
    /// None when the run has no validation data.
    pub val_stats: Option<DataStats>,
    val: Vec<Example>,
    base_model: String,
    train_examples: usize,
    /// The adapter at the best evaluation (kept only with early stopping).
    best: Option<Adapter>,
    /// Steps of the checkpoints taken, oldest first.
    checkpoints: Vec<usize>,
    early_stopped: bool,
    finished: bool,
}

impl Run {
    /// Splits `records` (or takes `val_records` as the validation set), prepares both, and
    /// puts `start` (a supervised adapter to continue) or a new adapter on `model`.
    /// `base_model` names the base in the adapter's PEFT config.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ctx: &GpuContext,
        model: Model,
        tok: &Tokenizer,
        spec: RunSpec,
        records: Vec<Record>,
        val_records: Option<Vec<Record>>,
        start: Option<Adapter>,
        base_model: &str,
    ) -> Result<Self> {
        spec.validate()?;
        if val_records.is_some() && spec.val_split > 0.0 {
            return Err(Error::invalid_setting("val_split", "validation data is given separately; a split of the training data would go unused"));
        }
        let (train_records, split_val) = split_records(records, spec.val_split, spec.train.seed);
        let val_records = val_records.unwrap_or(split_val);
        let objective = &spec.train.objective;
        let examples = |records: &[Record]| prepare_examples(objective, records, tok, &spec.data);
        let (train, train_stats) = examples(&train_records)?;
        let (val, val_stats) = if val_records.is_empty() {
            (Vec::new(), None)
        } else {
            let (v, s) = examples(&val_records)?;
            (v, Some(s))
        };
        if spec.patience.is_some() && val.is_empty() {
            return Err(Error::invalid_setting("patience", "early stopping needs validation data: a validation split or separate validation records"));
        }
        let reference = start.as_ref().filter(|_| spec.train.objective.needs_reference()).cloned();
        let adapter = match start {
            Some(a) => a,
            None => Adapter::init(&model.cfg, &spec.train.lora, spec.train.seed)?,
        };
        let train_examples = train.len();
        let mut trainer = Trainer::new(ctx, model, adapter, spec.train.clone(), train, &[&val])?;
        if let Some(r) = reference {
            // DPO from a supervised adapter: that adapter, frozen, is the reference
            trainer.freeze_reference(ctx, r)?;
        }
        Ok(Run {
            trainer,
            spec,
            train_stats,
            val_stats,
            val,
            base_model: base_model.to_string(),
            train_examples,
            best: None,
            checkpoints: Vec::new(),
            early_stopped: false,
            finished: false,
        })
    }

    /// Continues from a checkpoint's files (`read(name)` gives a file's bytes; `origin` names
    /// the checkpoint in errors). The checkpoint must come from a run with the same data
    /// order and adapter shape.
    pub fn resume(&mut self, ctx: &GpuContext, origin: &str, read: &dyn Fn(&str) -> Result<Vec<u8>>) -> Result<()> {
        let r = checkpoint::read(origin, read, &self.trainer.cfg, self.train_examples, self.trainer.has_frozen_reference())?;
        self.trainer.restore(ctx, &r.adapter, &r.moments, r.state)?;
        if self.trainer.state.best_eval_loss.is_some() && self.spec.patience.is_some() {
            // A checkpoint taken without early stopping has no copy.
            if let Ok(bytes) = read(BEST_WEIGHTS_FILE) {
                let config = serde_json::to_string(&peft::config_json(&r.adapter, &self.base_model)).expect("json");
                self.best = Some(peft::read(&config, &bytes, origin)?);
            }
        }
        self.checkpoints = vec![self.trainer.state.step];
        self.finished = self.trainer.done();
        Ok(())
    }

    /// Compiles the kernels of a step ([`Trainer::prepare_kernels`]); changes nothing else.
    pub async fn prepare_kernels(&mut self, ctx: &GpuContext) -> Result<()> {
        self.trainer.prepare_kernels(ctx).await
    }

    pub fn finished(&self) -> bool {
        self.finished
    }

    pub fn step(&self) -> usize {
        self.trainer.state.step
    }

    pub fn has_validation(&self) -> bool {
        !self.val.is_empty()
    }

    /// One optimizer step and what follows it: an evaluation when due, early stopping, a
    /// checkpoint when due, the end. A NaN or infinite loss ends the run with
    /// [`Event::Diverged`] instead of an error; GPU and other failures are errors.
    pub async fn advance(&mut self, ctx: &GpuContext) -> Result<Vec<Event>> {
        if self.finished {
            return Ok(Vec::new());
        }
        let s = match self.trainer.step(ctx).await {
            Ok(s) => s,
            Err(e) => return self.diverged(e),
        };
        let mut events = vec![Event::Step(s)];
        if self.has_validation() && self.trainer.eval_due(self.spec.eval_steps) {
            let stats = match self.trainer.evaluate(ctx, &self.val).await {
                Ok(stats) => stats,
                Err(e) => return self.diverged(e),
            };
            let best = self.trainer.record_eval(stats.loss);
            events.push(Event::Eval { step: s.step, stats, best });
            if let Some(patience) = self.spec.patience {
                if best {
                    self.best = Some(self.trainer.adapter(ctx).await?);
                } else if self.trainer.state.evals_since_best >= patience {
                    // As transformers' load_best_model_at_end: the model ends with the best adapter.
                    let best = self.best.as_ref().expect("an evaluation was best before");
                    self.trainer.load_adapter_weights(ctx, best)?;
                    events.push(Event::EarlyStop { step: s.step, evals_since_best: self.trainer.state.evals_since_best });
                    self.early_stopped = true;
                }
            }
        }
        if self.spec.save_steps.is_some_and(|n| s.step.is_multiple_of(n.max(1))) {
            events.push(Event::CheckpointDue { step: s.step });
        }
        if self.early_stopped || self.trainer.done() {
            self.finished = true;
            events.push(Event::Done { step: s.step, early_stopped: self.early_stopped });
        }
        Ok(events)
    }

    /// A diverged step ends the run as an event; other errors pass through.
    fn diverged(&mut self, e: Error) -> Result<Vec<Event>> {
        let Error::Diverged { step, detail } = e else { return Err(e) };
        self.finished = true;
        // The weights after step k − 1 produced the divergence at step k: the checkpoints
        // before those are good.
        let last_good_checkpoint = self.checkpoints.iter().rev().find(|&&c| c < self.trainer.state.step).copied();
        Ok(vec![Event::Diverged { step, detail, last_good_checkpoint }])
    }

    /// The files of a checkpoint at the current step, as (name, bytes): the adapter in
    /// PEFT's format, the optimizer's moments, the trainer's state and, with early stopping,
    /// the best adapter so far.
    pub async fn checkpoint(&mut self, ctx: &GpuContext) -> Result<Vec<(String, Vec<u8>)>> {
        let adapter = self.trainer.adapter(ctx).await?;
        let moments = self.trainer.optimizer_moments(ctx).await?;
        let mut files = checkpoint::files(&adapter, &self.base_model, &moments, &self.trainer.state, &self.trainer.cfg, self.train_examples, self.trainer.has_frozen_reference())?;
        if let Some(best) = &self.best {
            files.push((BEST_WEIGHTS_FILE.into(), peft::weights_bytes(best)?));
        }
        self.checkpoints.retain(|&c| c != self.trainer.state.step);
        self.checkpoints.push(self.trainer.state.step);
        Ok(files)
    }

    /// The adapter the run ends with: the current one, which after an early stop is the
    /// best one.
    pub async fn final_adapter(&mut self, ctx: &GpuContext) -> Result<Adapter> {
        self.trainer.adapter(ctx).await
    }

    /// The PEFT files of [`Run::final_adapter`].
    pub async fn adapter_files(&mut self, ctx: &GpuContext) -> Result<Vec<(String, Vec<u8>)>> {
        let adapter = self.final_adapter(ctx).await?;
        peft::files(&adapter, &self.base_model)
    }
}

