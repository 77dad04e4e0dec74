//! `hearth demo`: fine-tunes a model on the bundled customer-service data and shows its
//! answers to three of the questions before and after; with `--dpo`, then a DPO pass on the
//! bundled preference pairs, from that adapter, with its answers before and after.

use anyhow::{Context, Result};
use std::path::PathBuf;

use clap::{Args, Parser};
use hearth_core::train::data::{CUSTOMER_SERVICE_JSONL, CUSTOMER_SERVICE_PREFERENCES_JSONL};

use crate::train::TrainArgs;

#[derive(Args)]
#[command(after_help = "Examples:\n  hearth demo \"$(tests/reference/fetch_smollm2.sh)\"\n  hearth demo \"$(tests/reference/fetch_smollm2.sh)\" --dpo\n\nThe data is examples/customer_service.jsonl (built into the binary); the adapter goes to --out.\nWith --dpo, examples/customer_service_preferences.jsonl (good and bad answers) then trains\nthat adapter further with DPO (its frozen copy as the reference); that adapter goes to OUT/dpo.")]
pub struct DemoArgs {
    /// An HF model folder or a .gguf file (SmolLM2-135M-Instruct: tests/reference/fetch_smollm2.sh).
    pub model: PathBuf,
    /// Where the adapter, metrics.jsonl and a copy of the data go.
    #[arg(long, default_value = "hearth-demo")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 2.0)]
    pub epochs: f32,
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f32,
    /// Then a DPO pass on the bundled preference pairs, from the supervised adapter.
    #[arg(long)]
    pub dpo: bool,
    /// The DPO pass's learning rate.
    #[arg(long, default_value_t = 5e-4)]
    pub dpo_lr: f32,
}

#[derive(Parser)]
struct Wrapped {
    #[command(flatten)]
    train: TrainArgs,
}

const QUESTIONS: [&str; 3] = ["What are your opening hours?", "How long is the warranty on the battery?", "Do you rent bikes?"];

/// `hearth train` with `args` (after the model), comparing answers to [`QUESTIONS`].
fn train(model: &std::path::Path, args: &[&str]) -> Result<()> {
    let mut argv: Vec<String> = vec!["demo".into(), model.display().to_string()];
    argv.extend(args.iter().map(|s| s.to_string()));
    argv.extend(["--dropout", "0", "--compare-max-tokens", "48"].map(String::from));
    for q in QUESTIONS {
        argv.extend(["--compare".to_string(), q.to_string()]);
    }
    crate::train::run(Wrapped::try_parse_from(argv)?.train)
}

pub fn run(a: DemoArgs) -> Result<()> {
    std::fs::create_dir_all(&a.out).with_context(|| a.out.display().to_string())?;
    let data = a.out.join("customer_service.jsonl");
    std::fs::write(&data, CUSTOMER_SERVICE_JSONL).with_context(|| data.display().to_string())?;
    let (epochs, lr, out) = (a.epochs.to_string(), a.lr.to_string(), a.out.display().to_string());
    eprintln!("demo: fine-tuning on {} (28 questions and answers of a bike shop), {} epochs", data.display(), a.epochs);
    train(&a.model, &["--data", &data.display().to_string(), "--out", &out, "--epochs", &epochs, "--lr", &lr])?;
    if !a.dpo {
        return Ok(());
    }
    let pairs = a.out.join("customer_service_preferences.jsonl");
    std::fs::write(&pairs, CUSTOMER_SERVICE_PREFERENCES_JSONL).with_context(|| pairs.display().to_string())?;
    let dpo_out = a.out.join("dpo").display().to_string();
    let dpo_lr = a.dpo_lr.to_string();
    eprintln!("\ndemo: DPO on {} (20 questions, each with a good and a bad answer), from the adapter above", pairs.display());
    train(&a.model, &["--data", &pairs.display().to_string(), "--objective", "dpo", "--adapter", &out, "--out", &dpo_out, "--epochs", "2", "--lr", &dpo_lr])
}
