//! `hearth score`: mean negative log-likelihood per predicted token, and perplexity.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;

use clap::Args;

use crate::load::{load_on_gpu, ModelArgs};

#[derive(Args)]
#[command(after_help = "Examples:\n  hearth score model.gguf --text \"The capital of France is Paris.\"\n  hearth score ./SmolLM2-135M-Instruct --file notes.txt --json")]
pub struct ScoreArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The text to score.
    #[arg(long, conflicts_with = "file", required_unless_present = "file")]
    pub text: Option<String>,
    /// A UTF-8 file whose whole content is scored.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Print {"tokens": N, "mean_nll": x, "perplexity": y}.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: ScoreArgs) -> Result<()> {
    let text = match (&a.text, &a.file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => std::fs::read_to_string(f).with_context(|| f.display().to_string())?,
        (None, None) => unreachable!("clap requires one"),
    };
    if text.is_empty() {
        bail!("the text to score is empty");
    }
    let ctx = crate::open_gpu()?;
    let (mut model, tok) = load_on_gpu(&ctx, &a.model, 256)?;
    // what HF's tokenizer(text) gives: the default special tokens
    let ids = tok.encode(&text, true)?;
    if ids.len() < 2 {
        bail!("the text is {} token(s); scoring needs at least 2", ids.len());
    }
    if ids.len() > model.cache.capacity {
        bail!("the text is {} tokens, longer than the context of {} (raise --ctx)", ids.len(), model.cache.capacity);
    }
    let (n, total) = pollster::block_on(model.score(&ctx, &ids))?;
    let mean = total / n as f64;
    if a.json {
        println!("{}", serde_json::json!({"tokens": n, "mean_nll": mean, "perplexity": mean.exp()}));
    } else {
        println!("tokens scored: {n}\nmean NLL:      {mean:.6} nats/token\nperplexity:    {:.4}", mean.exp());
    }
    Ok(())
}
