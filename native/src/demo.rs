//! `hearth demo`: fine-tunes a model on the bundled customer-service data and shows its
//! answers to three of the questions before and after.

use anyhow::{Context, Result};
use std::path::PathBuf;

use clap::{Args, Parser};
use hearth_core::train::data::CUSTOMER_SERVICE_JSONL;

use crate::train::TrainArgs;

#[derive(Args)]
#[command(after_help = "Example:\n  hearth demo \"$(tests/reference/fetch_smollm2.sh)\"\n\nThe data is examples/customer_service.jsonl (built into the binary); the adapter goes to --out.")]
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
}

#[derive(Parser)]
struct Wrapped {
    #[command(flatten)]
    train: TrainArgs,
}

const QUESTIONS: [&str; 3] = ["What are your opening hours?", "How long is the warranty on the battery?", "Do you rent bikes?"];

pub fn run(a: DemoArgs) -> Result<()> {
    std::fs::create_dir_all(&a.out).with_context(|| a.out.display().to_string())?;
    let data = a.out.join("customer_service.jsonl");
    std::fs::write(&data, CUSTOMER_SERVICE_JSONL).with_context(|| data.display().to_string())?;
    let (epochs, lr) = (a.epochs.to_string(), a.lr.to_string());
    let mut argv: Vec<String> = ["demo", &a.model.display().to_string(), "--data", &data.display().to_string(), "--out", &a.out.display().to_string()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    argv.extend(["--epochs", &epochs, "--lr", &lr, "--dropout", "0", "--compare-max-tokens", "48"].map(String::from));
    for q in QUESTIONS {
        argv.extend(["--compare".to_string(), q.to_string()]);
    }
    let w = Wrapped::try_parse_from(argv)?;
    eprintln!("demo: fine-tuning on {} (28 questions and answers of a bike shop), {} epochs", data.display(), a.epochs);
    crate::train::run(w.train)
}
