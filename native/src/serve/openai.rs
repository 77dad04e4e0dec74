//! OpenAI's request and response shapes for `/v1/chat/completions` and `/v1/completions`:
//! parsing and checking a request into a [`Request`] for the worker, the JSON of answers
//! and stream chunks, and the error object (`{"error": {"message", "type", "param",
//! "code"}}`) every failure answers with.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hearth_core::model::chat::{render, Message};
use hearth_core::model::generate::GenerateParams;
use hearth_core::model::sampling::SamplingParams;
use hearth_core::model::Tokenizer;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Clone, Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<&'static str>,
    pub code: Option<&'static str>,
}

impl ApiError {
    pub fn invalid(param: Option<&'static str>, message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::BAD_REQUEST, message: message.into(), kind: "invalid_request_error", param, code: None }
    }

    pub fn with_code(self, code: &'static str) -> Self {
        ApiError { code: Some(code), ..self }
    }

    pub fn with_status(self, status: StatusCode) -> Self {
        ApiError { status, ..self }
    }

    pub fn unknown_model(name: &str, known: &[String]) -> Self {
        ApiError::invalid(Some("model"), format!("The model '{name}' does not exist; this server has: {}", known.join(", ")))
            .with_status(StatusCode::NOT_FOUND)
            .with_code("model_not_found")
    }

    pub fn server(message: &str) -> Self {
        ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, message: message.into(), kind: "server_error", param: None, code: None }
    }

    pub fn shutting_down() -> Self {
        ApiError::server("the server is shutting down; send the request again once it is back").with_status(StatusCode::SERVICE_UNAVAILABLE)
    }

    pub fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

/// Sampling fields both endpoints take (OpenAI's, plus top_k and repetition_penalty as vLLM
/// and llama.cpp's server take them).
#[derive(Deserialize, Default)]
pub struct Common {
    model: String,
    max_tokens: Option<i64>,
    max_completion_tokens: Option<i64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<i64>,
    repetition_penalty: Option<f64>,
    stop: Option<Stop>,
    seed: Option<i64>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    n: Option<i64>,
    presence_penalty: Option<f64>,
    frequency_penalty: Option<f64>,
    logprobs: Option<Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize)]
pub struct ChatRequest {
    messages: Vec<ChatMessage>,
    /// vLLM's way to pass template variables; Hearth reads enable_thinking (Qwen3).
    chat_template_kwargs: Option<TemplateKwargs>,
    #[serde(flatten)]
    common: Common,
}

#[derive(Deserialize)]
struct TemplateKwargs {
    enable_thinking: Option<bool>,
}

#[derive(Deserialize)]
struct ChatMessage {
    role: String,
    content: Option<Content>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

#[derive(Deserialize)]
pub struct CompletionRequest {
    prompt: Prompt,
    #[serde(flatten)]
    common: Common,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Prompt {
    One(String),
    Many(Vec<String>),
}

/// A checked request, ready for the queue.
pub struct Request {
    pub model: usize,
    pub model_name: String,
    pub prompt: Vec<u32>,
    pub params: GenerateParams,
    pub stream: bool,
    pub include_usage: bool,
}

/// What the checks need to know about the server.
pub struct Served<'a> {
    /// The base's name first, then the adapters'.
    pub names: &'a [String],
    pub tok: &'a Tokenizer,
    /// The KV cache's length: prompt + completion must fit.
    pub context: usize,
}

impl Served<'_> {
    fn model(&self, name: &str) -> Result<usize, ApiError> {
        self.names.iter().position(|n| n == name).ok_or_else(|| ApiError::unknown_model(name, self.names))
    }
}

pub fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::invalid(None, format!("the request body is not a valid request: {e}")))
}

impl ChatRequest {
    pub fn check(self, s: &Served) -> Result<Request, ApiError> {
        let model = s.model(&self.common.model)?;
        if self.messages.is_empty() {
            return Err(ApiError::invalid(Some("messages"), "messages is empty: give at least one message"));
        }
        let mut messages = Vec::new();
        for (i, m) in self.messages.iter().enumerate() {
            let role = match m.role.as_str() {
                "developer" => "system",
                r @ ("system" | "user" | "assistant") => r,
                other => return Err(ApiError::invalid(Some("messages"), format!("messages[{i}].role is \"{other}\": expected system, developer, user or assistant"))),
            };
            let content = match &m.content {
                None => String::new(),
                Some(Content::Text(t)) => t.clone(),
                Some(Content::Parts(parts)) => {
                    let mut text = String::new();
                    for p in parts {
                        match (p.kind.as_str(), &p.text) {
                            ("text", Some(t)) => text.push_str(t),
                            (kind, _) => return Err(ApiError::invalid(Some("messages"), format!("messages[{i}] has a content part of type \"{kind}\": this model reads text parts only"))),
                        }
                    }
                    text
                }
            };
            messages.push(Message::new(role, &content));
        }
        let template = s.tok.chat_template.as_deref().ok_or_else(|| ApiError::invalid(None, "this model has no chat template: use /v1/completions with a plain prompt"))?;
        let thinking = self.chat_template_kwargs.and_then(|k| k.enable_thinking);
        let text = render(template, &messages, true, &s.tok.bos_token, &s.tok.eos_token, thinking).map_err(|e| ApiError::invalid(Some("messages"), e.to_string()))?;
        let prompt = s.tok.encode(&text, false).map_err(|e| ApiError::server(&e.to_string()))?;
        self.common.check(s, model, prompt, "messages")
    }
}

impl CompletionRequest {
    pub fn check(self, s: &Served) -> Result<Request, ApiError> {
        let model = s.model(&self.common.model)?;
        let text = match self.prompt {
            Prompt::One(t) => t,
            Prompt::Many(mut v) if v.len() == 1 => v.remove(0),
            Prompt::Many(v) => return Err(ApiError::invalid(Some("prompt"), format!("prompt holds {} texts: send one per request", v.len()))),
        };
        if text.is_empty() {
            return Err(ApiError::invalid(Some("prompt"), "prompt is empty"));
        }
        let prompt = s.tok.encode(&text, true).map_err(|e| ApiError::server(&e.to_string()))?;
        self.common.check(s, model, prompt, "prompt")
    }
}

impl Common {
    fn check(self, s: &Served, model: usize, prompt: Vec<u32>, prompt_field: &'static str) -> Result<Request, ApiError> {
        if self.n.is_some_and(|n| n != 1) {
            return Err(ApiError::invalid(Some("n"), "only n = 1 is supported: send one request per answer"));
        }
        for (name, v) in [("presence_penalty", self.presence_penalty), ("frequency_penalty", self.frequency_penalty)] {
            if v.is_some_and(|v| v != 0.0) {
                return Err(ApiError::invalid(None, format!("{name} is not supported (use repetition_penalty)")));
            }
        }
        if self.logprobs.as_ref().is_some_and(|v| !(v.is_null() || v == &json!(false))) {
            return Err(ApiError::invalid(Some("logprobs"), "logprobs are not supported"));
        }
        let temperature = self.temperature.unwrap_or(1.0);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(ApiError::invalid(Some("temperature"), format!("temperature is {temperature}: expected 0 to 2")));
        }
        let top_p = self.top_p.unwrap_or(1.0);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(ApiError::invalid(Some("top_p"), format!("top_p is {top_p}: expected more than 0, at most 1")));
        }
        let top_k = self.top_k.unwrap_or(0);
        if top_k < 0 {
            return Err(ApiError::invalid(Some("top_k"), format!("top_k is {top_k}: expected 0 (all) or more")));
        }
        let repetition_penalty = self.repetition_penalty.unwrap_or(1.0);
        if repetition_penalty <= 0.0 {
            return Err(ApiError::invalid(Some("repetition_penalty"), "repetition_penalty must be more than 0"));
        }
        let stop = match self.stop {
            None => vec![],
            Some(Stop::One(s)) => vec![s],
            Some(Stop::Many(v)) => v,
        };
        if stop.len() > 4 || stop.iter().any(|s| s.is_empty()) {
            return Err(ApiError::invalid(Some("stop"), "stop takes at most 4 strings, none empty"));
        }
        let room = s.context.saturating_sub(prompt.len());
        let too_long = |asked: usize| {
            ApiError::invalid(
                Some(prompt_field),
                format!(
                    "This model's maximum context length is {} tokens. However, you requested {} tokens ({} in the {prompt_field}, {asked} in the completion). Please reduce the length of the {prompt_field} or completion (the server's --ctx sets the context).",
                    s.context,
                    prompt.len() + asked,
                    prompt.len()
                ),
            )
            .with_code("context_length_exceeded")
        };
        let max_tokens = match self.max_completion_tokens.or(self.max_tokens) {
            Some(m) if m < 1 => return Err(ApiError::invalid(Some("max_tokens"), format!("max_tokens is {m}: expected at least 1"))),
            Some(m) if m as u64 > room as u64 => return Err(too_long(usize::try_from(m).unwrap_or(usize::MAX))),
            Some(m) => m as usize,
            None if room == 0 => return Err(too_long(1)),
            None => room,
        };
        let seed = self.seed.map_or_else(random_seed, |s| s as u64);
        Ok(Request {
            model,
            model_name: self.model,
            prompt,
            params: GenerateParams {
                max_new_tokens: max_tokens,
                sampling: SamplingParams { temperature: temperature as f32, top_k: top_k as usize, top_p: top_p as f32, repetition_penalty: repetition_penalty as f32, seed },
                stop_strings: stop,
                // consecutive requests to one model share what their prompts share (a system prompt)
                reuse_cache: true,
            },
            stream: self.stream,
            include_usage: self.stream_options.is_some_and(|o| o.include_usage),
        })
    }
}

/// A seed for requests that give none: different each time, as OpenAI's are.
fn random_seed() -> u64 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    t.as_nanos() as u64 ^ 0x9E37_79B9_7F4A_7C15
}

/// Which endpoint an answer is for: its object names and where the text goes.
#[derive(Clone, Copy, PartialEq)]
pub enum Kind {
    Chat,
    Completion,
}

/// The fields every answer and chunk of one request share.
#[derive(Clone)]
pub struct Answer {
    pub kind: Kind,
    pub id: String,
    pub created: u64,
    pub model: String,
    pub prompt_tokens: usize,
}

impl Answer {
    fn usage(&self, completion_tokens: usize) -> Value {
        json!({"prompt_tokens": self.prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": self.prompt_tokens + completion_tokens})
    }

    fn object(&self, choices: Value, chunk: bool) -> Value {
        let object = match (self.kind, chunk) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Completion, _) => "text_completion",
        };
        json!({"id": self.id, "object": object, "created": self.created, "model": self.model, "choices": choices})
    }

    /// The whole answer (not streamed).
    pub fn full(&self, text: &str, finish: &str, completion_tokens: usize) -> Value {
        let choice = match self.kind {
            Kind::Chat => json!({"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": null, "finish_reason": finish}),
            Kind::Completion => json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish}),
        };
        let mut v = self.object(json!([choice]), false);
        v["usage"] = self.usage(completion_tokens);
        v
    }

    /// A stream chunk: new text (the chat's first chunk also names the role) or the finish.
    pub fn chunk(&self, text: Option<&str>, finish: Option<&str>, first: bool) -> Value {
        let choice = match self.kind {
            Kind::Chat => {
                let mut delta = json!({});
                if first {
                    delta["role"] = json!("assistant");
                }
                if let Some(t) = text {
                    delta["content"] = json!(t);
                }
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
            }
            Kind::Completion => json!({"index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish}),
        };
        self.object(json!([choice]), true)
    }

    /// The closing chunk of stream_options.include_usage: no choices, the usage.
    pub fn usage_chunk(&self, completion_tokens: usize) -> Value {
        let mut v = self.object(json!([]), true);
        v["usage"] = self.usage(completion_tokens);
        v
    }
}
