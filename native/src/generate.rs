//! `hearth generate` and `hearth chat`: sampling from the model, streamed to the terminal.

use anyhow::{bail, Context, Result};
use std::io::{BufRead, Write};

use clap::Args;
use hearth_core::model::chat::{render, Message};
use hearth_core::model::generate::{generate, GenerateParams};
use hearth_core::model::sampling::SamplingParams;
use hearth_core::train::settings::parse_thinking;
use hearth_core::model::{Model, Tokenizer};
use hearth_core::GpuContext;

use crate::load::{load_on_gpu, ModelArgs};

#[derive(Args, Clone, Debug)]
pub struct SamplingArgs {
    /// Most tokens to generate.
    #[arg(long, default_value_t = 128)]
    pub max_new_tokens: usize,
    /// 0 is greedy (always the most likely token).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Sample only among the k most likely tokens (0: all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Sample only from the smallest set of tokens whose probability reaches p.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Above 1 makes repeating a token less likely (HF's repetition_penalty).
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    /// Seed of the sampler: the same seed gives the same text.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop when the text contains this (may be given several times).
    #[arg(long = "stop")]
    pub stop: Vec<String>,
    /// enable_thinking for chat templates that read it (Qwen3): on or off; default: the
    /// template's own.
    #[arg(long, value_parser = ["default", "on", "off"], default_value = "default")]
    pub thinking: String,
}

impl SamplingArgs {
    fn params(&self) -> Result<GenerateParams> {
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            bail!("--top-p {} must be in (0, 1]", self.top_p);
        }
        if self.temperature < 0.0 || self.repetition_penalty <= 0.0 {
            bail!("--temperature must be ≥ 0 and --repetition-penalty > 0");
        }
        Ok(GenerateParams {
            max_new_tokens: self.max_new_tokens,
            sampling: SamplingParams {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                repetition_penalty: self.repetition_penalty,
                seed: self.seed,
            },
            stop_strings: self.stop.clone(),
            reuse_cache: false,
        })
    }
}

#[derive(Args)]
#[command(after_help = "Examples:\n  hearth generate model.gguf --prompt \"Once upon a time\"\n  hearth generate ./SmolLM2-135M-Instruct --chat --prompt \"What is the capital of France?\" --temperature 0.7 --top-p 0.9 --seed 1\n  hearth generate model.gguf --prompt \"def add(a, b):\" --max-new-tokens 32 --json")]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt.
    #[arg(long)]
    pub prompt: String,
    /// Wrap the prompt in the model's chat template as a user message, with the generation prompt.
    #[arg(long)]
    pub chat: bool,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Print {"ids": [...], "text": "..."} instead of streaming.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
#[command(after_help = "Example:\n  hearth chat model.gguf --temperature 0.7 --top-p 0.9\n\nType a message and press Enter; /reset clears the history, /quit (or Ctrl-D) leaves.")]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// A system message to start the conversation with.
    #[arg(long)]
    pub system: Option<String>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

/// The chat template applied to `messages`, with the generation prompt.
pub fn chat_text(tok: &Tokenizer, messages: &[Message], thinking: &str) -> Result<String> {
    let template = tok.chat_template.as_deref().context("this model has no chat template (tokenizer_config.json chat_template or GGUF tokenizer.chat_template)")?;
    Ok(render(template, messages, true, &tok.bos_token, &tok.eos_token, parse_thinking(thinking)?)?)
}

/// [`chat_text`] tokenized as HF does (no extra special tokens: the template writes them).
fn chat_ids(tok: &Tokenizer, messages: &[Message], thinking: &str) -> Result<Vec<u32>> {
    Ok(tok.encode(&chat_text(tok, messages, thinking)?, false)?)
}

/// The model's reply to `messages` (chat template, generation prompt), not streamed; the
/// context starts empty.
pub fn answer(ctx: &GpuContext, model: &mut Model, tok: &Tokenizer, messages: &[Message], sampling: &SamplingArgs) -> Result<String> {
    let ids = chat_ids(tok, messages, &sampling.thinking)?;
    let params = sampling.params()?;
    model.reset();
    Ok(run(ctx, model, tok, &ids, &params, false)?.1)
}

pub fn run_generate(a: GenerateArgs) -> Result<()> {
    if a.prompt.is_empty() {
        bail!("--prompt is empty: give some text to continue");
    }
    let params = a.sampling.params()?;
    let ctx = crate::open_gpu()?;
    let (mut model, tok) = load_on_gpu(&ctx, &a.model, 256)?;
    let ids = if a.chat { chat_ids(&tok, &[Message::new("user", &a.prompt)], &a.sampling.thinking)? } else { tok.encode(&a.prompt, true)? };
    let json = a.json;
    let gen = run(&ctx, &mut model, &tok, &ids, &params, !json)?;
    if json {
        println!("{}", serde_json::json!({"ids": gen.0, "text": gen.1}));
    } else {
        println!();
    }
    Ok(())
}

fn run(ctx: &GpuContext, model: &mut Model, tok: &Tokenizer, ids: &[u32], params: &GenerateParams, stream: bool) -> Result<(Vec<u32>, String)> {
    let mut out = std::io::stdout();
    let g = pollster::block_on(generate(ctx, model, tok, ids, params, |piece| {
        if stream {
            let _ = write!(out, "{piece}");
            let _ = out.flush();
        }
    }))
    ?;
    Ok((g.ids, g.text))
}

pub fn run_chat(a: ChatArgs) -> Result<()> {
    // each turn runs only what the template adds after the cached conversation
    let params = GenerateParams { reuse_cache: true, ..a.sampling.params()? };
    let ctx = crate::open_gpu()?;
    let (mut model, tok) = load_on_gpu(&ctx, &a.model, 256)?;
    let start: Vec<Message> = a.system.iter().map(|s| Message::new("system", s)).collect();
    let mut history = start.clone();
    eprintln!("chat: type a message; /reset clears the history, /quit leaves");
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim();
        match line {
            "" => continue,
            "/quit" | "/exit" => break,
            "/reset" => {
                history = start.clone();
                continue;
            }
            _ => {}
        }
        history.push(Message::new("user", line));
        let ids = chat_ids(&tok, &history, &a.sampling.thinking)?;
        if ids.len() + params.max_new_tokens > model.cache.capacity {
            eprintln!("(the conversation is longer than the context of {} tokens; /reset to start over)", model.cache.capacity);
            history.pop();
            continue;
        }
        let (_, text) = run(&ctx, &mut model, &tok, &ids, &params, true)?;
        println!();
        history.push(Message::new("assistant", text.trim()));
    }
    Ok(())
}
