//! The run engine (hearth_core::train::run) on the tiny Llama fixture: early stopping ends
//! with the best adapter, the best adapter survives a resume, a diverged loss ends the run
//! as an event naming the last good checkpoint, and conflicting settings are refused.

use hearth_core::io::load::{load_hf_folder, LoadedModel};
use hearth_core::lora::{Adapter, LoraConfig, Target};
use hearth_core::model::gpu_picks::decode_on_gpu;
use hearth_core::model::sampling::{Sampler, SamplingParams};
use hearth_core::model::{Model, ModelOptions, WeightFormat};
use hearth_core::ops::adamw::AdamwConfig;
use hearth_core::train::data::{parse_records, DataOptions, Record, Template};
use hearth_core::train::run::{Event, Run, RunSpec};
use hearth_core::train::trainer::TrainConfig;
use hearth_core::gpu::KernelPaths;
use hearth_core::{Error, GpuContext};
use hearth_tests::{fixture, own_gpu, with_gpu, DirFiles};

const DATA: &str = r#"{"prompt": "Hello", "completion": " world, tiny models"}
{"prompt": "The bike", "completion": " shop opens at nine"}
{"prompt": "Rent a", "completion": " bike for a day"}
{"prompt": "Tiny models", "completion": " learn quickly"}
{"prompt": "Hello world", "completion": ", tiny models learn"}
{"prompt": "Opening", "completion": " hours are nine to five"}
"#;

fn records() -> Vec<Record> {
    parse_records("data.jsonl", DATA).unwrap()
}

/// A run of `steps` steps evaluated after every step, on 2 of the 6 records held out; a
/// learning rate this high overshoots, so the validation loss rises within a few steps.
fn spec(lr: f32, steps: usize, patience: Option<usize>) -> RunSpec {
    RunSpec {
        train: TrainConfig {
            lora: LoraConfig { r: 4, alpha: 8.0, rslora: false, dropout: 0.0, targets: Target::ALL.to_vec() },
            adamw: AdamwConfig { lr, ..AdamwConfig::default() },
            batch_size: 2,
            max_steps: Some(steps),
            ..TrainConfig::default()
        },
        data: DataOptions { template: Template::parse("{prompt}{completion}"), max_seq_len: 64, train_on_prompt: false, enable_thinking: None },
        val_split: 0.34,
        eval_steps: Some(1),
        patience,
        save_steps: None,
    }
}

fn new_run(ctx: &GpuContext, m: &LoadedModel, spec: RunSpec) -> Run {
    let model = Model::new(ctx, &m.cfg, m.weights.clone(), ModelOptions { chunk: 64, max_seq: 64, max_binding: None }).unwrap();
    Run::new(ctx, model, &m.tokenizer, spec, records(), None, None, "tiny-llama").unwrap()
}

/// Advances to the end (or to `until` steps), collecting the events.
fn advance(ctx: &GpuContext, run: &mut Run, until: Option<usize>) -> Vec<Event> {
    let mut events = Vec::new();
    while !run.finished() && until.is_none_or(|u| run.step() < u) {
        events.extend(pollster::block_on(run.advance(ctx)).unwrap());
    }
    events
}

fn weights(a: &Adapter) -> Vec<f32> {
    a.tensors.iter().flat_map(|t| t.a.iter().chain(&t.b).copied()).collect()
}

/// (step, loss, best) of every evaluation.
fn evals(events: &[Event]) -> Vec<(usize, f64, bool)> {
    events.iter().filter_map(|e| if let Event::Eval { step, stats, best } = e { Some((*step, stats.loss, *best)) } else { None }).collect()
}

#[test]
fn early_stopping_ends_with_the_best_adapter_also_across_a_resume() {
    with_gpu!(ctx => {
        let m = load_hf_folder(&DirFiles(fixture("tiny-llama")), None).unwrap();
        let lr = 0.05;
        // Without early stopping: where the validation loss is lowest, and that adapter.
        let mut plain = new_run(ctx, &m, spec(lr, 10, None));
        let mut best_at = (0, f64::INFINITY, Vec::new());
        while !plain.finished() {
            for e in pollster::block_on(plain.advance(ctx)).unwrap() {
                if let Event::Eval { step, stats, .. } = e {
                    if stats.loss < best_at.1 {
                        best_at = (step, stats.loss, weights(&pollster::block_on(plain.final_adapter(ctx)).unwrap()));
                    }
                }
            }
        }
        let (best_step, best_loss, best_weights) = best_at;
        assert!(best_step < 9, "the validation loss should rise before the end at this learning rate (best at step {best_step})");

        // With patience 1: the run stops one evaluation after the best, with its adapter.
        let mut stopping = new_run(ctx, &m, spec(lr, 10, Some(1)));
        let events = advance(ctx, &mut stopping, None);
        let e = evals(&events);
        assert!(e.iter().all(|&(s, _, _)| s <= best_step + 1), "{e:?}");
        assert!(events.contains(&Event::EarlyStop { step: best_step + 1, evals_since_best: 1 }), "{events:?}");
        assert!(events.contains(&Event::Done { step: best_step + 1, early_stopped: true }), "{events:?}");
        let end = weights(&pollster::block_on(stopping.final_adapter(ctx)).unwrap());
        assert!(end == best_weights, "the early-stopped run ends with the adapter of step {best_step}");
        assert!(e.iter().any(|&(s, l, b)| s == best_step && b && (l - best_loss).abs() < 1e-9), "{e:?}");

        // Interrupted after the best step, and resumed from that checkpoint in a new run:
        // it stops at the same step with the same best adapter.
        let mut first = new_run(ctx, &m, spec(lr, 10, Some(1)));
        advance(ctx, &mut first, Some(best_step));
        let files = pollster::block_on(first.checkpoint(ctx)).unwrap();
        assert!(files.iter().any(|(n, _)| n == hearth_core::train::run::BEST_WEIGHTS_FILE), "the checkpoint keeps the best adapter");
        drop(first);
        let mut resumed = new_run(ctx, &m, spec(lr, 10, Some(1)));
        let read = |name: &str| files.iter().find(|(n, _)| n == name).map(|(_, b)| b.clone()).ok_or_else(|| Error::bad_file("checkpoint", name));
        resumed.resume(ctx, "checkpoint", &read).unwrap();
        let events = advance(ctx, &mut resumed, None);
        assert!(events.contains(&Event::Done { step: best_step + 1, early_stopped: true }), "{events:?}");
        let end = weights(&pollster::block_on(resumed.final_adapter(ctx)).unwrap());
        assert!(end == best_weights, "the resumed run ends with the best adapter from before the resume");
    });
}

#[test]
fn a_diverged_loss_ends_the_run_with_an_event() {
    with_gpu!(ctx => {
        let m = load_hf_folder(&DirFiles(fixture("tiny-llama")), None).unwrap();
        let mut s = spec(1e30, 6, None);
        s.train.max_grad_norm = 0.0;
        s.eval_steps = Some(100);
        let mut run = new_run(ctx, &m, s);
        let mut taken = Vec::new();
        let mut diverged = None;
        while !run.finished() {
            for e in pollster::block_on(run.advance(ctx)).unwrap() {
                match e {
                    Event::Step(st) => {
                        pollster::block_on(run.checkpoint(ctx)).unwrap();
                        taken.push(st.step);
                    }
                    Event::Diverged { step, last_good_checkpoint, .. } => diverged = Some((step, last_good_checkpoint)),
                    _ => {}
                }
            }
        }
        let (step, last_good) = diverged.expect("a 1e30 learning rate diverges");
        assert_eq!(taken.len(), step - 1, "every step before the diverged one completed");
        // The weights after step − 1 produced the non-finite loss: the checkpoints before it are good.
        assert_eq!(last_good, (step >= 3).then_some(step - 2), "diverged at step {step}");
        assert!(pollster::block_on(run.advance(ctx)).unwrap().is_empty(), "a diverged run does not go on");
    });
}

#[test]
fn a_validation_split_with_separate_validation_data_is_refused() {
    with_gpu!(ctx => {
        let m = load_hf_folder(&DirFiles(fixture("tiny-llama")), None).unwrap();
        let model = Model::new(ctx, &m.cfg, m.weights.clone(), ModelOptions { chunk: 64, max_seq: 64, max_binding: None }).unwrap();
        let err = Run::new(ctx, model, &m.tokenizer, spec(1e-3, 2, None), records(), Some(records()), None, "tiny-llama").err().unwrap();
        assert!(matches!(err, Error::InvalidSetting { setting: "val_split", .. }), "{err:?}");
    });
}

#[test]
fn every_out_of_range_setting_is_refused_by_name() {
    let ok = spec(1e-3, 2, Some(1));
    ok.validate().unwrap();
    type Change = Box<dyn Fn(&mut RunSpec)>;
    let cases: Vec<(&str, Change)> = vec![
        ("r", Box::new(|s| s.train.lora.r = 0)),
        ("alpha", Box::new(|s| s.train.lora.alpha = 0.0)),
        ("dropout", Box::new(|s| s.train.lora.dropout = 1.0)),
        ("lr", Box::new(|s| s.train.adamw.lr = f32::NAN)),
        ("beta1", Box::new(|s| s.train.adamw.beta1 = 1.0)),
        ("beta2", Box::new(|s| s.train.adamw.beta2 = -0.1)),
        ("eps", Box::new(|s| s.train.adamw.eps = 0.0)),
        ("weight_decay", Box::new(|s| s.train.adamw.weight_decay = -1.0)),
        ("max_grad_norm", Box::new(|s| s.train.max_grad_norm = -1.0)),
        ("warmup_ratio", Box::new(|s| s.train.warmup_ratio = 1.5)),
        ("batch_size", Box::new(|s| s.train.batch_size = 0)),
        ("grad_accum", Box::new(|s| s.train.grad_accum = 0)),
        ("max_steps", Box::new(|s| s.train.max_steps = Some(0))),
        ("epochs", Box::new(|s| (s.train.max_steps, s.train.epochs) = (None, 0.0))),
        ("max_seq_len", Box::new(|s| s.data.max_seq_len = 1)),
        ("val_split", Box::new(|s| s.val_split = 1.0)),
        ("eval_steps", Box::new(|s| s.eval_steps = Some(0))),
        ("patience", Box::new(|s| s.patience = Some(0))),
        ("save_steps", Box::new(|s| s.save_steps = Some(0))),
    ];
    for (name, change) in cases {
        let mut s = ok.clone();
        change(&mut s);
        match s.validate() {
            Err(Error::InvalidSetting { setting, .. }) => assert_eq!(setting, name),
            other => panic!("{name}: expected InvalidSetting, got {other:?}"),
        }
    }
}

#[test]
fn early_stopping_without_validation_data_is_refused() {
    with_gpu!(ctx => {
        let m = load_hf_folder(&DirFiles(fixture("tiny-llama")), None).unwrap();
        let model = Model::new(ctx, &m.cfg, m.weights.clone(), ModelOptions { chunk: 64, max_seq: 64, max_binding: None }).unwrap();
        let mut s = spec(1e-3, 2, Some(2));
        s.val_split = 0.0;
        let err = Run::new(ctx, model, &m.tokenizer, s, records(), None, None, "tiny-llama").err().unwrap();
        assert!(matches!(err, Error::InvalidSetting { setting: "patience", .. }), "{err:?}");
    });
}

/// The first `count` of `records()` as one micro-batch (prompts masked, as `spec` prepares
/// them), and an adapter for it whose B is away from zero, so that every LoRA path carries
/// gradient into the layers below.
fn packed_batch(m: &LoadedModel, count: usize) -> (hearth_core::model::backward::TokenBatch, Adapter) {
    let s = spec(1e-3, 2, None);
    let (examples, _) = hearth_core::train::data::prepare(&records(), &m.tokenizer, &s.data).unwrap();
    let batch = hearth_core::train::batch::pack(&examples.iter().take(count).collect::<Vec<_>>());
    let mut adapter = Adapter::init(&m.cfg, &s.train.lora, 5).unwrap();
    for t in &mut adapter.tensors {
        t.b.iter_mut().enumerate().for_each(|(i, x)| *x = ((i % 7) as f32 - 3.0) * 0.01);
    }
    (batch, adapter)
}

/// Gradient checkpointing recomputes each layer's activations in the backward instead of
/// keeping them: the gradients must not change (the same kernels run on the same inputs).
#[test]
fn gradients_with_checkpointing_equal_those_without() {
    use hearth_core::model::backward::{Dropout, TrainPass};
    with_gpu!(ctx => {
        let m = load_hf_folder(&DirFiles(fixture("tiny-llama")), None).unwrap();
        let (batch, adapter) = packed_batch(&m, 3);
        let grads = |checkpointing: bool| -> Vec<Vec<f32>> {
            let mut model = Model::new(ctx, &m.cfg, m.weights.clone(), ModelOptions { chunk: 64, max_seq: 64, max_binding: None }).unwrap();
            model.set_adapter(ctx, Some(adapter.clone()), "test").unwrap();
            let mut pass = TrainPass::new(ctx, &model, batch.len(), checkpointing).unwrap();
            let dropout = Dropout { p: 0.1, seed: 9 };
            pollster::block_on(pass.forward_backward(ctx, &model, &batch, 1.0 / batch.counted() as f32, dropout, false)).unwrap();
            pollster::block_on(pass.grad_arena.as_ref().unwrap().read_parts(ctx)).unwrap()
        };
        let (off, on) = (grads(false), grads(true));
        assert!(off.iter().flatten().any(|&g| g != 0.0), "the gradients are not all zero");
        for (i, (a, b)) in off.iter().zip(&on).enumerate() {
            let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
            // Bitwise equal is expected (same kernels, same inputs); 1e-7 allows a reordered sum.
            assert!(worst <= 1e-7, "part {i}: checkpointing changes a gradient by {worst}");
        }
    });
}

/// The head computes only the tokens that have a target (prompt tokens have none, and their
/// logits carry no loss): the losses and gradients equal those of a head over every token
/// where the prompt tokens weigh nothing. Also with the head in chunks of 8 rows (their
/// targets copied, as 32 bytes cannot be bound where they lie) and the lm_head in 9 parts;
/// and a micro-batch without a target gets zero gradients.
#[test]
fn the_head_runs_on_the_tokens_with_a_target_alone() {
    use hearth_core::model::backward::{Dropout, TrainPass};
    use hearth_core::ops::cross_entropy::IGNORE;
    with_gpu!(ctx => {
        let m = load_hf_folder(&DirFiles(fixture("tiny-llama")), None).unwrap();
        let (batch, adapter) = packed_batch(&m, 4);
        let (n, counted) = (batch.len(), batch.counted());
        assert!(counted > 8 && n - counted > 8, "{counted} of {n} tokens with a target");
        // the same tokens, each with a target: the prompt's weigh 0
        let mut every = batch.clone();
        every.targets.iter_mut().zip(&batch.tokens).filter(|(t, _)| **t == IGNORE).for_each(|(t, &token)| *t = token);
        let scale = 1.0 / counted as f32;
        let weights: Vec<f32> = batch.targets.iter().map(|&t| if t == IGNORE { 0.0 } else { scale }).collect();
        let mut none = batch.clone();
        none.targets.fill(IGNORE);
        // 8 rows of 300 logits; lm_head parts of 36 rows of 64
        for max_binding in [None, Some(9_600)] {
            let mut model = Model::new(ctx, &m.cfg, m.weights.clone(), ModelOptions { chunk: 64, max_seq: 64, max_binding }).unwrap();
            model.set_adapter(ctx, Some(adapter.clone()), "test").unwrap();
            let mut pass = TrainPass::new(ctx, &model, n, false).unwrap();
            let mut run = |batch: &hearth_core::model::backward::TokenBatch, weighted: bool| {
                let losses = pollster::block_on(pass.forward_token_losses(ctx, &model, batch)).unwrap();
                let trained = if weighted {
                    pollster::block_on(pass.forward_backward_weighted(ctx, &model, batch, &mut |_| weights.clone(), Dropout::OFF, false)).unwrap()
                } else {
                    vec![pollster::block_on(pass.forward_backward(ctx, &model, batch, scale, Dropout::OFF, false)).unwrap() as f32]
                };
                let grads: Vec<f32> = pollster::block_on(pass.grad_arena.as_ref().unwrap().read_parts(ctx)).unwrap().concat();
                (losses, trained, grads)
            };
            let (kept, kept_sum, kept_grads) = run(&batch, false);
            let (all, all_trained, all_grads) = run(&every, true);
            assert_eq!(all_trained, all, "{max_binding:?}: the weighted pass's losses are its forward's");
            for (i, ((&k, &a), &t)) in kept.iter().zip(&all).zip(&batch.targets).enumerate() {
                let want = if t == IGNORE { 0.0 } else { a };
                assert!((k - want).abs() <= 1e-5 * want.abs().max(1.0), "{max_binding:?}: token {i}: loss {k}, want {want}");
            }
            let sum: f32 = kept.iter().sum();
            assert!((kept_sum[0] - sum).abs() <= 1e-5 * sum, "{max_binding:?}: Σ loss {} vs {sum}", kept_sum[0]);
            let largest = all_grads.iter().fold(0.0f32, |m, g| m.max(g.abs()));
            assert!(largest > 0.0, "the gradients are not all zero");
            let worst = kept_grads.iter().zip(&all_grads).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
            // the same products on the same rows: equal but for a reordered sum
            assert!(worst <= 1e-5 * largest, "{max_binding:?}: the gradients differ by {worst} (largest {largest})");
            let (losses, _, grads) = run(&none, false);
            assert!(losses.iter().all(|&l| l == 0.0) && grads.iter().all(|&g| g == 0.0), "{max_binding:?}: no target, yet a loss or a gradient");
        }
    });
}

/// DPO from a starting adapter (the reference: its frozen copy), interrupted and resumed
/// from a checkpoint, ends with the losses and the adapter of the uninterrupted run; a
/// resume without that starting adapter is refused (its reference would differ).
#[test]
fn a_dpo_run_resumes_exactly() {
    use hearth_core::lora::peft;
    use hearth_core::train::preference::{DpoLoss, Objective};
    const PAIRS: &str = r#"{"prompt": "Hello", "chosen": " world, tiny models", "rejected": " nothing"}
{"prompt": "The bike", "chosen": " shop opens at nine", "rejected": " is closed"}
{"prompt": "Rent a", "chosen": " bike for a day", "rejected": " car"}
{"prompt": "Tiny models", "chosen": " learn quickly", "rejected": " never learn anything"}
"#;
    with_gpu!(ctx => {
        let m = load_hf_folder(&DirFiles(fixture("tiny-llama")), None).unwrap();
        let dir = fixture("peft/tiny-llama/initial");
        let start = peft::read(&std::fs::read_to_string(dir.join(peft::CONFIG_FILE)).unwrap(), &std::fs::read(dir.join(peft::WEIGHTS_FILE)).unwrap(), "initial").unwrap();
        let mut s = spec(1e-2, 6, None);
        s.val_split = 0.0;
        s.eval_steps = None;
        s.train.objective = Objective::Dpo { beta: 0.1, loss: DpoLoss::Sigmoid, label_smoothing: 0.0 };
        let run = |start: Option<Adapter>| {
            let model = Model::new(ctx, &m.cfg, m.weights.clone(), ModelOptions { chunk: 64, max_seq: 64, max_binding: None }).unwrap();
            Run::new(ctx, model, &m.tokenizer, s.clone(), parse_records("pairs.jsonl", PAIRS).unwrap(), None, start, "tiny-llama").unwrap()
        };
        let losses = |events: &[Event]| -> Vec<f64> { events.iter().filter_map(|e| if let Event::Step(st) = e { Some(st.loss) } else { None }).collect() };
        let mut whole = run(Some(start.clone()));
        let all = losses(&advance(ctx, &mut whole, None));
        assert_eq!(all.len(), 6);
        assert!((all[0] - std::f64::consts::LN_2).abs() < 1e-6, "the first step's policy is its reference: loss ln 2, got {}", all[0]);
        assert!(all[5] < all[0], "the DPO loss fell: {all:?}");
        let end = weights(&pollster::block_on(whole.final_adapter(ctx)).unwrap());

        let mut first = run(Some(start.clone()));
        let before = losses(&advance(ctx, &mut first, Some(3)));
        let files = pollster::block_on(first.checkpoint(ctx)).unwrap();
        drop(first);
        let read = |name: &str| files.iter().find(|(n, _)| n == name).map(|(_, b)| b.clone()).ok_or_else(|| Error::bad_file("checkpoint", name));
        let mut resumed = run(Some(start.clone()));
        resumed.resume(ctx, "checkpoint", &read).unwrap();
        let after = losses(&advance(ctx, &mut resumed, None));
        assert_eq!([before, after].concat(), all, "the resumed run's losses");
        assert!(weights(&pollster::block_on(resumed.final_adapter(ctx)).unwrap()) == end, "the resumed run's adapter");

        let mut without = run(None);
        let e = without.resume(ctx, "checkpoint", &read).unwrap_err().to_string();
        assert!(e.contains("starting adapter"), "{e}");
    });
}

#[test]
fn preparing_the_kernels_changes_nothing() {
    with_gpu!(ctx => {
        let m = load_hf_folder(&DirFiles(fixture("tiny-llama")), None).unwrap();
        let mut s = spec(1e-2, 4, None);
        s.train.lora.dropout = 0.1; // the prepared pass uses the first step's dropout mask
        let mut plain = new_run(ctx, &m, s.clone());
        let plain_events = advance(ctx, &mut plain, None);
        let mut prepared = new_run(ctx, &m, s);
        pollster::block_on(prepared.prepare_kernels(ctx)).unwrap();
        let prepared_events = advance(ctx, &mut prepared, None);
        let losses = |events: &[Event]| -> Vec<f64> { events.iter().filter_map(|e| if let Event::Step(st) = e { Some(st.loss) } else { None }).collect() };
        assert_eq!(losses(&prepared_events), losses(&plain_events));
        assert!(weights(&pollster::block_on(prepared.final_adapter(ctx)).unwrap()) == weights(&pollster::block_on(plain.final_adapter(ctx)).unwrap()));
    });
}

/// A context of its own on the adapter's kernel path and one on the GPU kernels (none
/// without an adapter), so that no other test's launches count in their profiles.
fn own_context_per_kernel_path() -> Vec<GpuContext> {
    [None, Some(KernelPaths::Gpu)]
        .into_iter()
        .filter_map(|paths| {
            let own = own_gpu()?;
            Some(match paths {
                Some(p) => own.with_kernel_paths(p),
                None => own,
            })
        })
        .collect()
}

/// Once a run has seen its batches' lengths, it creates no GPU buffers and no bind groups
/// (issue 15's host overhead): the pool hands back the buffers of the steps before and the
/// cache their bind groups, whatever order the lengths come in and with evaluations between
/// the steps. Scratch buffers whose size follows the batch come in size classes, so that
/// many lengths share a few of them. Checked on both kernel paths, each in a context of its
/// own (so that no other test's launches count).
#[test]
fn a_run_creates_no_buffers_or_bind_groups_after_its_first_epoch() {
    let m = load_hf_folder(&DirFiles(fixture("tiny-llama")), None).unwrap();
    let data: String = (0..16)
        .map(|i| format!("{{\"prompt\": \"Question {i}\", \"completion\": \"{}\"}}\n", " tiny models learn".repeat(1 + i * 7 % 16)))
        .collect();
    for ctx in own_context_per_kernel_path() {
        // 12 examples to train on, one per step; the first epoch sees every length
        let mut s = spec(1e-3, 30, None);
        (s.train.batch_size, s.train.lora.dropout, s.val_split, s.eval_steps, s.data.max_seq_len) = (1, 0.1, 0.25, Some(4), 256);
        let model = Model::new(&ctx, &m.cfg, m.weights.clone(), ModelOptions { chunk: 64, max_seq: 256, max_binding: None }).unwrap();
        let mut run = Run::new(&ctx, model, &m.tokenizer, s, parse_records("data.jsonl", &data).unwrap(), None, None, "tiny-llama").unwrap();
        advance(&ctx, &mut run, Some(13));
        ctx.profile_begin();
        let events = advance(&ctx, &mut run, None);
        let p = pollster::block_on(ctx.profile_end()).unwrap();
        let lengths: std::collections::BTreeSet<usize> = events.iter().filter_map(|e| if let Event::Step(st) = e { Some(st.tokens) } else { None }).collect();
        assert!(lengths.len() >= 8, "the examples should differ in length: {lengths:?}");
        let what = format!("{:?} kernels, 17 steps and their evaluations ({} launches)", ctx.kernel_paths(), p.dispatches);
        assert_eq!((p.bind_groups_created, p.buffers_created), (0, 0), "{what}: bind groups and buffers created");
    }
}

/// Decoding creates no GPU buffers and no bind groups after its first token, on both kernel
/// paths (Q4_0 weights, as GGUF models decode): the attention over a longer cache each
/// token binds the same buffers. Likewise decoding on the GPU, a token ahead, after its first
/// two (a model of tied embeddings, which the GPU looks up; tokens drawn at a temperature from
/// a nucleus): two readbacks in flight.
#[test]
fn decoding_creates_no_buffers_or_bind_groups_after_its_first_token() {
    let q4_0 = || Some(WeightFormat::parse("q4_0").unwrap());
    let tied = load_hf_folder(&DirFiles(fixture("tiny-llama32")), q4_0()).unwrap();
    for ctx in own_context_per_kernel_path() {
        let mut model = Model::new(&ctx, &tied.cfg, tied.weights.clone(), ModelOptions { chunk: 16, max_seq: 128, max_binding: None }).unwrap();
        assert!(model.decodes_ahead(&ctx));
        pollster::block_on(model.forward(&ctx, &[1, 2, 3, 4, 5])).unwrap();
        let sampler = Sampler::new(SamplingParams { temperature: 0.8, top_k: 40, top_p: 0.9, ..Default::default() });
        pollster::block_on(decode_on_gpu(&ctx, &mut model, sampler.pick(0), 3, |_| Ok(true))).unwrap();
        ctx.profile_begin();
        pollster::block_on(decode_on_gpu(&ctx, &mut model, sampler.pick(3), 40, |_| Ok(true))).unwrap();
        let p = pollster::block_on(ctx.profile_end()).unwrap();
        let what = format!("{:?} kernels, 40 tokens picked on the GPU ({} launches)", ctx.kernel_paths(), p.dispatches);
        assert_eq!((p.bind_groups_created, p.buffers_created), (0, 0), "{what}: bind groups and buffers created");
    }
    let m = load_hf_folder(&DirFiles(fixture("tiny-llama")), q4_0()).unwrap();
    for ctx in own_context_per_kernel_path() {
        let mut model = Model::new(&ctx, &m.cfg, m.weights.clone(), ModelOptions { chunk: 16, max_seq: 128, max_binding: None }).unwrap();
        let argmax = |l: &[f32]| (0..l.len()).max_by(|&a, &b| l[a].total_cmp(&l[b])).unwrap() as u32;
        let mut logits = pollster::block_on(model.forward(&ctx, &[1, 2, 3, 4, 5])).unwrap();
        logits = pollster::block_on(model.forward(&ctx, &[argmax(&logits)])).unwrap();
        ctx.profile_begin();
        for _ in 0..40 {
            logits = pollster::block_on(model.forward(&ctx, &[argmax(&logits)])).unwrap();
        }
        let p = pollster::block_on(ctx.profile_end()).unwrap();
        let what = format!("{:?} kernels, 40 tokens ({} launches)", ctx.kernel_paths(), p.dispatches);
        assert_eq!((p.bind_groups_created, p.buffers_created), (0, 0), "{what}: bind groups and buffers created");
    }
}
