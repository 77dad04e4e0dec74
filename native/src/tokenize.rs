//! `hearth tokenize`: the token ids of a text as the model's tokenizer gives them (from
//! tokenizer.json or rebuilt from GGUF metadata), to compare with other programs.

use anyhow::Result;
use clap::Args;

use crate::load::{load, ModelArgs};

#[derive(Args)]
#[command(after_help = "Example:\n  hearth tokenize model.gguf --text \"Hello world, 你好\" --json")]
pub struct TokenizeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The text to tokenize.
    #[arg(long)]
    pub text: String,
    /// Add the special tokens `tokenizer(text)` adds (a BOS for Llama 3); default: none.
    #[arg(long)]
    pub special: bool,
    /// Print {"ids": [...], "tokens": [...]}.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: TokenizeArgs) -> Result<()> {
    let m = load(&a.model)?;
    let ids = m.tokenizer.encode(&a.text, a.special)?;
    let tokens: Vec<String> = ids.iter().map(|&i| m.tokenizer.token(i).unwrap_or_default()).collect();
    if a.json {
        println!("{}", serde_json::json!({ "ids": ids, "tokens": tokens }));
    } else {
        for (id, t) in ids.iter().zip(&tokens) {
            println!("{id:>8}  {t:?}");
        }
    }
    Ok(())
}
