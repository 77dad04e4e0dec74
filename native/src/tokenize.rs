//! `hearth tokenize`: the token ids of a text as the model's tokenizer gives them (from
//! tokenizer.json or rebuilt from GGUF metadata), to compare with other programs.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;

use clap::Args;
use hearth_core::model::chat::Message;

use crate::load::{load, ModelArgs};

#[derive(Args)]
#[command(after_help = "Examples:\n  hearth tokenize model.gguf --text \"Hello world, 你好\" --json\n  hearth tokenize model.gguf --messages chat.json   # [{\"role\": \"user\", \"content\": \"Hi\"}]")]
pub struct TokenizeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The text to tokenize.
    #[arg(long, required_unless_present = "messages", conflicts_with = "messages")]
    pub text: Option<String>,
    /// A JSON file with a conversation ([{"role": ..., "content": ...}, ...]): rendered with
    /// the model's chat template and the generation prompt, as `hearth chat` sends it; the
    /// text is printed too.
    #[arg(long)]
    pub messages: Option<PathBuf>,
    /// Add the special tokens `tokenizer(text)` adds (a BOS for Llama 3); default: none.
    #[arg(long)]
    pub special: bool,
    /// Print {"ids": [...], "tokens": [...]}.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: TokenizeArgs) -> Result<()> {
    let m = load(&a.model)?;
    let tok = &m.tokenizer;
    let (text, special) = match (&a.text, &a.messages) {
        (Some(t), _) => (t.clone(), a.special),
        (None, Some(path)) => {
            let json = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
            let messages: Vec<Message> = serde_json::from_str(&json).with_context(|| format!("{}: expected a JSON list of {{\"role\", \"content\"}} objects", path.display()))?;
            (crate::generate::chat_text(tok, &messages, "default")?, false)
        }
        (None, None) => bail!("give --text or --messages"),
    };
    let ids = tok.encode(&text, special)?;
    let tokens: Vec<String> = ids.iter().map(|&i| tok.token(i).unwrap_or_default()).collect();
    if a.json {
        let mut out = serde_json::json!({ "ids": ids, "tokens": tokens });
        if a.messages.is_some() {
            out["text"] = serde_json::json!(text);
        }
        println!("{out}");
    } else {
        for (id, t) in ids.iter().zip(&tokens) {
            println!("{id:>8}  {t:?}");
        }
    }
    Ok(())
}
