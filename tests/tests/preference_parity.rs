//! Preference tuning against TRL's DPOTrainer and ORPOTrainer (fixtures from
//! tests/reference/preference_reference.py): DPO with the sigmoid, IPO and hinge losses and
//! ORPO, on the tiny Llama and Qwen2 models with a PEFT LoRA adapter, every step on the same
//! four pairs:
//! - the data pipeline gives TRL's token ids and completion masks (DPO's tokenization;
//!   ORPO's trainer tokenizes in its own older way, so its pairs are taken as TRL made them);
//! - the first step's loss, gradient norm and every metric TRL logs agree within
//!   1e-4·max(1, |x|) (sums of ~30 f32 token log-probabilities: |logps| is ~100);
//! - ten steps' losses agree within 1e-3 relative, the supervised parity bound;
//! - TRL's trained adapter, evaluated by Hearth on the pairs, gives TRL's evaluation.
//!
//! The reference: a copy of the starting adapter, frozen (as TRL copies a PEFT model's
//! adapter); in the case whose starting B is zero, the base with the adapter switched off,
//! which is the same function.

use hearth_core::io::load::load_hf_folder;
use hearth_core::lora::{peft, Adapter, LoraConfig, Target};
use hearth_core::model::{Model, ModelOptions};
use hearth_core::ops::adamw::AdamwConfig;
use hearth_core::train::data::{parse_records, DataOptions, Example, Template};
use hearth_core::train::preference::{interleave, prepare_pairs, DpoLoss, Objective, PreferencePair, PreferenceStats};
use hearth_core::train::schedule::Schedule;
use hearth_core::train::trainer::{TrainConfig, Trainer};
use hearth_core::GpuContext;
use hearth_tests::{fixture, with_gpu, DirFiles};
use serde_json::Value;

struct Case {
    dir: String,
    r: Value,
    objective: Objective,
    /// The starting adapter's B is zero: the reference is the base (no frozen copy).
    base_reference: bool,
}

fn case(name: &str, base_reference: bool) -> Case {
    let dir = format!("preference/{name}");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(fixture(&dir).join("reference.json")).unwrap()).unwrap();
    let s = &r["settings"];
    let objective = match r["objective"].as_str().unwrap() {
        "dpo" => Objective::Dpo { beta: s["beta"].as_f64().unwrap(), loss: DpoLoss::parse(s["loss_type"][0].as_str().unwrap()).unwrap(), label_smoothing: 0.0 },
        _ => Objective::Orpo { alpha: s["beta"].as_f64().unwrap() },
    };
    Case { dir, r, objective, base_reference }
}

fn read_adapter(dir: &str) -> Adapter {
    let d = fixture(dir);
    let cfg = std::fs::read_to_string(d.join(peft::CONFIG_FILE)).unwrap();
    peft::read(&cfg, &std::fs::read(d.join(peft::WEIGHTS_FILE)).unwrap(), dir).unwrap()
}

fn example(ids: &Value, mask: &Value) -> Example {
    let tokens = ids.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
    let loss = mask.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() == 1).collect();
    Example { tokens, loss }
}

/// The pairs as TRL tokenized them.
fn trl_pairs(c: &Case) -> Vec<PreferencePair> {
    c.r["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| PreferencePair { chosen: example(&p["chosen"], &p["chosen_mask"]), rejected: example(&p["rejected"], &p["rejected_mask"]) })
        .collect()
}

fn trainer(ctx: &GpuContext, c: &Case, adapter: Adapter, pairs: &[PreferencePair]) -> Trainer {
    let m = load_hf_folder(&DirFiles(fixture(c.r["model"].as_str().unwrap())), None).unwrap();
    let model = Model::new(ctx, &m.cfg, m.weights, ModelOptions { chunk: 64, max_seq: 128, max_binding: None }).unwrap();
    let cfg = TrainConfig {
        lora: LoraConfig { r: 4, alpha: 8.0, rslora: false, dropout: 0.0, targets: Target::ALL.to_vec() },
        adamw: AdamwConfig { lr: 1e-2, weight_decay: 0.0, ..AdamwConfig::default() },
        max_grad_norm: 1.0,
        schedule: Schedule::Linear,
        warmup_steps: 0,
        warmup_ratio: 0.0,
        batch_size: 4,
        grad_accum: 1,
        epochs: 1.0,
        max_steps: Some(10),
        seed: 0,
        checkpointing: Some(false),
        memory_budget: 1 << 30,
        objective: c.objective.clone(),
    };
    let mut t = Trainer::new(ctx, model, adapter, cfg, interleave(pairs), &[]).unwrap();
    if c.objective.needs_reference() && !c.base_reference {
        t.freeze_reference(ctx, read_adapter(&format!("{}/initial", c.dir))).unwrap();
    }
    t
}

fn close(what: &str, got: f64, want: f64, tol: f64) {
    assert!((got - want).abs() <= tol * want.abs().max(1.0), "{what}: Hearth {got}, TRL {want}");
}

/// Every metric TRL logged (`prefix` "eval_" for an evaluation) against Hearth's.
fn check_metrics(what: &str, p: &PreferenceStats, trl: &Value, prefix: &str) {
    for (name, v) in p.to_json(prefix) {
        let want = trl[&name].as_f64().unwrap_or_else(|| panic!("{what}: TRL logged no {name}"));
        close(&format!("{what} {name}"), v.as_f64().unwrap(), want, 1e-4);
    }
}

fn run_case(ctx: &GpuContext, c: &Case) {
    let name = &c.dir;
    let pairs = trl_pairs(c);
    let mut t = trainer(ctx, c, read_adapter(&format!("{name}/initial")), &pairs);
    let steps = c.r["steps"].as_array().unwrap();
    for (i, want) in steps.iter().enumerate() {
        let s = pollster::block_on(t.step(ctx)).unwrap();
        if i == 0 {
            close(&format!("{name} step 1 loss"), s.loss, want["loss"].as_f64().unwrap(), 1e-4);
            close(&format!("{name} step 1 grad_norm"), s.grad_norm as f64, want["grad_norm"].as_f64().unwrap(), 1e-4);
            check_metrics(&format!("{name} step 1"), s.preference.as_ref().unwrap(), want, "");
        }
        close(&format!("{name} step {} loss", i + 1), s.loss, want["loss"].as_f64().unwrap(), 1e-3);
    }
    // TRL's trained adapter, scored by Hearth
    let mut t = trainer(ctx, c, read_adapter(&format!("{name}/trained")), &pairs);
    let e = pollster::block_on(t.evaluate(ctx, &interleave(&pairs))).unwrap();
    close(&format!("{name} eval loss"), e.loss, c.r["eval"]["eval_loss"].as_f64().unwrap(), 1e-4);
    check_metrics(&format!("{name} eval"), e.preference.as_ref().unwrap(), &c.r["eval"], "eval_");
}

#[test]
fn dpo_and_orpo_match_trl() {
    with_gpu!(ctx => {
        for (name, base_reference) in [
            ("tiny-llama-dpo-sigmoid", false),
            ("tiny-qwen2-dpo-sigmoid", true),
            ("tiny-llama-dpo-ipo", false),
            ("tiny-qwen2-dpo-hinge", false),
            ("tiny-llama-orpo", false),
        ] {
            run_case(ctx, &case(name, base_reference));
        }
    });
}

/// Hearth's own data pipeline (template "{prompt}{completion}", EOS after the completion)
/// tokenizes the records as TRL's DPOTrainer does.
#[test]
fn preference_records_tokenize_as_trl_does() {
    for name in ["tiny-llama-dpo-sigmoid", "tiny-qwen2-dpo-sigmoid"] {
        let c = case(name, false);
        let m = load_hf_folder(&DirFiles(fixture(c.r["model"].as_str().unwrap())), None).unwrap();
        let text = std::fs::read_to_string(fixture(&c.dir).join("data.jsonl")).unwrap();
        let records = parse_records("data.jsonl", &text).unwrap();
        let opts = DataOptions { template: Template::parse("{prompt}{completion}"), max_seq_len: 512, train_on_prompt: false, enable_thinking: None };
        let (pairs, stats) = prepare_pairs(&records, &m.tokenizer, &opts).unwrap();
        assert_eq!(stats.examples, 4);
        assert_eq!(pairs, trl_pairs(&c), "{name}");
    }
}
