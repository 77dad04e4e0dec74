//! Training data: records from .jsonl or a .json array (Alpaca instruction/input/output,
//! prompt/completion, chat messages, or one text field), rendered by a template into
//! prompt and response text, tokenized with a loss mask (response tokens only unless
//! `train_on_prompt`), truncated at `max_seq_len`.

use serde_json::{Map, Value};

use crate::model::chat::{render, Message};
use crate::model::Tokenizer;
use crate::rng::Rng;
use crate::{Error, Result};

/// One record of the data file, and where it came from ("data.jsonl line 3").
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub origin: String,
    pub fields: Map<String, Value>,
}

/// Parses .jsonl (one object per line, blank lines skipped) or a .json array of objects.
pub fn parse_records(file: &str, text: &str) -> Result<Vec<Record>> {
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    let mut out = Vec::new();
    if trimmed.starts_with('[') {
        let items: Vec<Value> = serde_json::from_str(trimmed).map_err(|e| Error::bad_file(file, format!("not a valid JSON array ({e})")).with_source(e))?;
        for (i, v) in items.into_iter().enumerate() {
            let origin = format!("{file} item {}", i + 1);
            match v {
                Value::Object(fields) => out.push(Record { origin, fields }),
                other => return Err(Error::bad_file(&origin, format!("expected an object, found {}", kind(&other)))),
            }
        }
    } else {
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let origin = format!("{file} line {}", i + 1);
            match serde_json::from_str::<Value>(line) {
                Ok(Value::Object(fields)) => out.push(Record { origin, fields }),
                Ok(other) => return Err(Error::bad_file(&origin, format!("expected a JSON object, found {}", kind(&other)))),
                Err(e) => return Err(Error::bad_file(&origin, format!("not valid JSON ({e})")).with_source(e)),
            }
        }
    }
    if out.is_empty() {
        return Err(Error::bad_file(file, "holds no examples"));
    }
    Ok(out)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// How a record becomes text.
#[derive(Clone, Debug, PartialEq)]
pub enum Template {
    /// Stanford Alpaca's prompt ("Below is an instruction …### Response:\n").
    Alpaca,
    /// <|im_start|>role\n…<|im_end|>\n turns.
    Chatml,
    /// The model's own chat template.
    Model,
    /// Text with {field} placeholders; the last placeholder is the response.
    Custom(String),
}

impl Template {
    /// The template a setting names: empty picks the model's chat template when it has
    /// one, else alpaca.
    pub fn resolve(name: &str, tok: &Tokenizer) -> Template {
        match name {
            "" if tok.chat_template.is_some() => Template::Model,
            "" => Template::Alpaca,
            t => Template::parse(t),
        }
    }

    pub fn parse(s: &str) -> Template {
        match s {
            "alpaca" => Template::Alpaca,
            "chatml" => Template::Chatml,
            "model" => Template::Model,
            // shells pass "\n" literally
            custom => Template::Custom(custom.replace("\\n", "\n").replace("\\t", "\t")),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Template::Alpaca => "alpaca",
            Template::Chatml => "chatml",
            Template::Model => "model",
            Template::Custom(t) => t,
        }
    }
}

const CHATML: &str = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// Text pieces of one example; `true` pieces carry loss.
pub type Segments = Vec<(String, bool)>;

fn field<'a>(r: &'a Record, name: &str) -> Result<&'a str> {
    match r.fields.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(Error::bad_file(&r.origin, format!("field \"{name}\" should be a string, found {}", kind(other)))),
        None => Err(Error::bad_file(&r.origin, format!("field \"{name}\" is missing"))),
    }
}

fn optional<'a>(r: &'a Record, name: &str) -> Result<Option<&'a str>> {
    if r.fields.get(name).is_none_or(Value::is_null) {
        return Ok(None);
    }
    field(r, name).map(Some)
}

/// A record as chat messages: its `messages`, or (prompt, response) as one user turn and
/// one assistant turn.
fn messages_of(r: &Record) -> Result<Vec<Message>> {
    if let Some(m) = r.fields.get("messages") {
        let list = m.as_array().ok_or_else(|| Error::bad_file(&r.origin, "\"messages\" should be an array of {{role, content}}"))?;
        return list
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let get = |k: &str| m.get(k).and_then(Value::as_str).ok_or_else(|| Error::bad_file(&r.origin, format!("messages[{i}] has no string \"{k}\"")));
                Ok(Message::new(get("role")?, get("content")?))
            })
            .collect();
    }
    let (prompt, response) = prompt_response(r)?;
    Ok(vec![Message::new("user", &prompt), Message::new("assistant", &response)])
}

/// (prompt, response) of an instruction or prompt/completion record.
fn prompt_response(r: &Record) -> Result<(String, String)> {
    if r.fields.contains_key("instruction") {
        let mut prompt = field(r, "instruction")?.to_string();
        if let Some(input) = optional(r, "input")?.filter(|s| !s.trim().is_empty()) {
            prompt = format!("{prompt}\n\n{input}");
        }
        // "response" is a common alias of Alpaca's "output"
        let response = if r.fields.contains_key("response") { field(r, "response")? } else { field(r, "output")? };
        return Ok((prompt, response.to_string()));
    }
    if r.fields.contains_key("prompt") {
        return Ok((field(r, "prompt")?.to_string(), field(r, "completion")?.to_string()));
    }
    Err(Error::bad_file(&r.origin, format!("no known fields (expected instruction/input/output, prompt/completion, messages or text; found {})",
        r.fields.keys().cloned().collect::<Vec<_>>().join(", ")
    )))
}

/// Renders a record into segments. `eos` is appended to responses that a chat template does
/// not close itself (Alpaca, custom, plain text).
pub fn render_record(r: &Record, opts: &DataOptions, tok: &Tokenizer) -> Result<Segments> {
    let eos = tok.eos_token.clone();
    if r.fields.contains_key("text") && !r.fields.contains_key("messages") && !r.fields.contains_key("instruction") && !r.fields.contains_key("prompt") {
        return Ok(vec![(field(r, "text")?.to_string() + &eos, true)]);
    }
    match &opts.template {
        Template::Alpaca => {
            if r.fields.contains_key("messages") {
                return Err(Error::bad_file(&r.origin, "chat messages need a chat template (the model's or chatml), not alpaca"));
            }
            let (_, response) = prompt_response(r)?;
            let instruction = if r.fields.contains_key("instruction") { field(r, "instruction")? } else { field(r, "prompt")? };
            let input = optional(r, "input")?.filter(|s| !s.trim().is_empty());
            let prompt = match input {
                Some(input) => format!("Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"),
                None => format!("Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"),
            };
            Ok(vec![(prompt, false), (response + &eos, true)])
        }
        Template::Custom(t) => render_custom(r, t, &eos),
        Template::Chatml => render_chat(r, CHATML, tok, opts.enable_thinking),
        Template::Model => {
            let t = tok.chat_template.as_deref().ok_or_else(|| {
                Error::invalid_setting("template", "the model has no chat template; choose alpaca, chatml or a custom template")
            })?;
            render_chat(r, t, tok, opts.enable_thinking)
        }
    }
}

/// The prompt that asks for the next assistant turn of `history` the way `template` renders
/// training examples, and whether it is chat-template text (which holds its own special
/// tokens). Alpaca and custom templates see the last user message only.
pub fn generation_prompt(history: &[Message], opts: &DataOptions, tok: &Tokenizer) -> Result<(String, bool)> {
    let template = &opts.template;
    let last = history.iter().rev().find(|m| m.role == "user").ok_or_else(|| Error::Shape("the conversation has no user message to answer".into()))?;
    let chat = |t: &str| render(t, history, true, &tok.bos_token, &tok.eos_token, opts.enable_thinking).map(|p| (p, true));
    let fields = |names: &[&str]| Record {
        origin: "the prompt".into(),
        fields: names.iter().map(|n| (n.to_string(), Value::String(last.content.clone()))).collect(),
    };
    let segments = match template {
        Template::Chatml => return chat(CHATML),
        Template::Model => return chat(tok.chat_template.as_deref().unwrap_or(CHATML)),
        Template::Alpaca => render_record(&fields(&["instruction", "output"]), opts, tok)?,
        // every placeholder gets the message; the response part is dropped below
        Template::Custom(t) => {
            let names: Vec<&str> = t.split('{').skip(1).filter_map(|s| s.split_once('}').map(|(n, _)| n)).collect();
            render_record(&fields(&names), opts, tok)?
        }
    };
    Ok((segments.into_iter().take_while(|(_, loss)| !loss).map(|(s, _)| s).collect(), false))
}

/// "{instruction}\n### Answer:\n{output}": text up to the last placeholder is the prompt.
fn render_custom(r: &Record, t: &str, eos: &str) -> Result<Segments> {
    let mut pieces = Vec::new(); // (literal, Some(field))
    let mut rest = t;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else { break };
        let name = &rest[open + 1..open + close];
        pieces.push((rest[..open].to_string(), Some(name.to_string())));
        rest = &rest[open + close + 1..];
    }
    let tail = rest.to_string();
    let Some(last) = pieces.len().checked_sub(1) else {
        return Err(Error::invalid_setting("template", format!("\"{t}\" has no {{field}} placeholder")));
    };
    let mut prompt = String::new();
    let mut response = String::new();
    for (i, (lit, name)) in pieces.iter().enumerate() {
        let value = match name.as_deref() {
            Some(n) => optional(r, n)?.ok_or_else(|| Error::bad_file(&r.origin, format!("field \"{n}\" (used by the template) is missing")))?,
            None => "",
        };
        prompt.push_str(lit);
        if i == last {
            response.push_str(value);
        } else {
            prompt.push_str(value);
        }
    }
    response.push_str(&tail);
    Ok(vec![(prompt, false), (response + eos, true)])
}

/// A chat rendered by `template`; each assistant turn (as the template closes it) carries loss.
fn render_chat(r: &Record, template: &str, tok: &Tokenizer, enable_thinking: Option<bool>) -> Result<Segments> {
    let messages = messages_of(r)?;
    if !messages.iter().any(|m| m.role == "assistant") {
        return Err(Error::bad_file(&r.origin, "the conversation has no assistant message to learn"));
    }
    let rnd = |m: &[Message], gen: bool| render(template, m, gen, &tok.bos_token, &tok.eos_token, enable_thinking).map_err(|e| Error::bad_file(&r.origin, format!("{e}")));
    let mut segments = Vec::new();
    let mut done = 0; // bytes of the full rendering already placed in segments
    let full = rnd(&messages, false)?;
    for (k, m) in messages.iter().enumerate() {
        if m.role != "assistant" {
            continue;
        }
        let before = rnd(&messages[..k], true)?;
        let through = rnd(&messages[..=k], false)?;
        if !through.starts_with(&before) || !full.starts_with(&through) || before.len() < done {
            return Err(Error::bad_file(&r.origin, "the chat template does not render the conversation turn by turn as a prefix, so the response tokens cannot be found; the chatml template can"));
        }
        segments.push((full[done..before.len()].to_string(), false));
        segments.push((full[before.len()..through.len()].to_string(), true));
        done = through.len();
    }
    if done < full.len() {
        segments.push((full[done..].to_string(), false));
    }
    segments.retain(|(s, _)| !s.is_empty());
    Ok(segments)
}

/// A tokenized example: `loss[t]` says whether token t is predicted with loss.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub tokens: Vec<u32>,
    pub loss: Vec<bool>,
}

impl Example {
    /// Tokens that carry loss (each predicted from the ones before it).
    pub fn counted(&self) -> usize {
        self.loss.iter().skip(1).filter(|&&l| l).count()
    }
}

/// What tokenization did to a data file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DataStats {
    pub examples: usize,
    pub truncated: usize,
    /// Dropped: nothing left to learn after truncation.
    pub dropped: usize,
    pub tokens: usize,
    pub loss_tokens: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DataOptions {
    pub template: Template,
    pub max_seq_len: usize,
    pub train_on_prompt: bool,
    /// enable_thinking for chat templates that read it (Qwen3); None: the template's default.
    pub enable_thinking: Option<bool>,
}

/// Tokenizes segments: chat-template text already holds its special tokens; other text is
/// tokenized as HF's `tokenizer(text)` does (BOS when the tokenizer adds one).
pub fn tokenize(segments: &Segments, tok: &Tokenizer, chat: bool, train_on_prompt: bool) -> Result<Example> {
    let mut tokens = Vec::new();
    let mut loss = Vec::new();
    for (i, (text, is_loss)) in segments.iter().enumerate() {
        let ids = tok.encode(text, i == 0 && !chat)?;
        loss.extend(std::iter::repeat_n(*is_loss || train_on_prompt, ids.len()));
        tokens.extend(ids);
    }
    Ok(Example { tokens, loss })
}

/// One record tokenized, cut to `max_seq_len`.
pub struct Prepared {
    pub example: Example,
    pub truncated: bool,
}

/// A record as an [`Example`] (which may have no loss tokens left after the cut).
pub fn prepare_one(r: &Record, tok: &Tokenizer, opts: &DataOptions) -> Result<Prepared> {
    let chat = matches!(opts.template, Template::Chatml | Template::Model);
    let segments = render_record(r, opts, tok)?;
    let is_text = segments.len() == 1 && segments[0].1;
    let mut ex = tokenize(&segments, tok, chat && !is_text, opts.train_on_prompt)?;
    let truncated = ex.tokens.len() > opts.max_seq_len;
    if truncated {
        ex.tokens.truncate(opts.max_seq_len);
        ex.loss.truncate(opts.max_seq_len);
    }
    Ok(Prepared { example: ex, truncated })
}

/// Every record as an [`Example`], with the counts of truncated and dropped ones.
pub fn prepare(records: &[Record], tok: &Tokenizer, opts: &DataOptions) -> Result<(Vec<Example>, DataStats)> {
    let mut stats = DataStats::default();
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        let Prepared { example: ex, truncated } = prepare_one(r, tok, opts)?;
        stats.truncated += usize::from(truncated);
        if ex.counted() == 0 {
            stats.dropped += 1;
            continue;
        }
        stats.examples += 1;
        stats.tokens += ex.tokens.len();
        stats.loss_tokens += ex.counted();
        out.push(ex);
    }
    if out.is_empty() {
        return Err(Error::invalid_setting("max_seq_len", format!(
            "no example has response tokens left within {} tokens ({} dropped)",
            opts.max_seq_len, stats.dropped
        )));
    }
    Ok((out, stats))
}

/// The bundled example: customer-service questions and answers of a fictional bike shop
/// (instruction/output records), for the demo and the web app's one-click dataset.
pub const CUSTOMER_SERVICE_JSONL: &str = include_str!("../../../examples/customer_service.jsonl");

/// The bike shop's questions with a good answer (chosen) and a wrong or curt one (rejected),
/// for preference tuning (`hearth demo --dpo`).
pub const CUSTOMER_SERVICE_PREFERENCES_JSONL: &str = include_str!("../../../examples/customer_service_preferences.jsonl");

/// Splits off a seeded random `fraction` of the records (at least one) for validation.
pub fn split_records(mut records: Vec<Record>, fraction: f32, seed: u64) -> (Vec<Record>, Vec<Record>) {
    if fraction <= 0.0 || records.len() < 2 {
        return (records, Vec::new());
    }
    let n_val = ((records.len() as f64 * fraction as f64).ceil() as usize).clamp(1, records.len() - 1);
    let mut rng = Rng::new(seed ^ 0x005E_ED0F_5917);
    let mut picked: Vec<usize> = Vec::new();
    let mut order: Vec<usize> = (0..records.len()).collect();
    for i in 0..n_val {
        let j = i + rng.below(order.len() - i);
        order.swap(i, j);
        picked.push(order[i]);
    }
    picked.sort_unstable();
    let mut val = Vec::with_capacity(n_val);
    for &i in picked.iter().rev() {
        val.push(records.remove(i));
    }
    val.reverse();
    (records, val)
}
