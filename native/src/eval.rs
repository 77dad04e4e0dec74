//! `hearth eval`: loss and perplexity over the response tokens of a data file.

use anyhow::{Context, Result};
use std::path::PathBuf;

use clap::Args;
use hearth_core::model::backward::TrainPass;
use hearth_core::train::batch::max_batch_tokens;
use hearth_core::train::data::prepare;
use hearth_core::train::trainer::evaluate;

use crate::load::{load_on_gpu, ModelArgs};
use crate::settings_args::DataSettingsArgs;
use crate::train::{describe, read_records};

#[derive(Args)]
#[command(after_help = "Examples:\n  hearth eval model.gguf --data val.jsonl\n  hearth eval model.gguf --adapter runs/faq --data val.jsonl --template model --json")]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Data to evaluate (.jsonl or .json, the formats `hearth train` reads).
    #[arg(long)]
    pub data: PathBuf,
    #[command(flatten)]
    pub data_opts: DataSettingsArgs,
    /// Examples per forward pass.
    #[arg(long, default_value_t = 4)]
    pub batch_size: usize,
    /// Print {"examples": N, "tokens": T, "loss": x, "perplexity": y}.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: EvalArgs) -> Result<()> {
    let ctx = crate::open_gpu()?;
    let (model, tok) = load_on_gpu(&ctx, &a.model, 256)?;
    a.data_opts.0.validate()?;
    let opts = a.data_opts.0.data_options(&tok)?;
    let (examples, stats) = prepare(&read_records(&a.data)?, &tok, &opts).with_context(|| a.data.display().to_string())?;
    eprintln!("{}", describe("data", "examples", &stats, opts.max_seq_len));
    let mut pass = TrainPass::new(&ctx, &model, max_batch_tokens(&examples, a.batch_size), true)?;
    let e = pollster::block_on(evaluate(&ctx, &model, &mut pass, &examples, a.batch_size))?;
    if a.json {
        println!("{}", serde_json::json!({"examples": examples.len(), "tokens": e.tokens, "loss": e.loss, "perplexity": e.perplexity}));
    } else {
        println!("examples:    {}\ntokens:      {} (with loss)\nloss:        {:.6} nats/token\nperplexity:  {:.4}", examples.len(), e.tokens, e.loss, e.perplexity);
    }
    Ok(())
}
