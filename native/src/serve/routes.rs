//! The HTTP routes of `hearth serve` (axum): the OpenAI endpoints, `/health`, and the error
//! answers for everything else. Handlers check and tokenize a request, queue it for the
//! GPU worker and turn its events into one JSON answer or a server-sent event stream.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream, StreamExt};
use hearth_core::model::Tokenizer;
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use super::openai::{parse, Answer, ApiError, ChatRequest, CompletionRequest, Kind, Request, Served};
use super::worker::{Event, Job, Stats};

/// The largest request body; larger ones get 413.
pub const BODY_LIMIT: usize = 4 << 20;

pub struct AppState {
    pub jobs: Sender<Job>,
    pub stats: Arc<Stats>,
    /// The base's name, then the adapters'.
    pub names: Vec<String>,
    pub tok: Arc<Tokenizer>,
    pub context: usize,
    pub api_key: Option<String>,
    /// Most requests waiting for the GPU; more get 429.
    pub max_queue: usize,
    pub started: u64,
    pub next_id: AtomicU64,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Seconds since the Unix epoch (OpenAI's `created`).
pub(super) fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

async fn health(State(st): State<Arc<AppState>>) -> Json<Value> {
    let s = &st.stats;
    let load = |a: &std::sync::atomic::AtomicUsize| a.load(Ordering::SeqCst);
    Json(json!({
        "status": if s.draining.load(Ordering::SeqCst) { "shutting down" } else { "ok" },
        "models": st.names,
        "queued": load(&s.queued),
        "running": load(&s.running),
        "served": load(&s.served),
        "cancelled": load(&s.cancelled),
        "largest_batch": load(&s.largest_batch),
    }))
}

fn authorize(st: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(key) = &st.api_key else { return Ok(()) };
    let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if given == Some(key.as_str()) {
        return Ok(());
    }
    Err(ApiError::invalid(None, "Incorrect or missing API key: send the server's --api-key as \"Authorization: Bearer KEY\"")
        .with_status(StatusCode::UNAUTHORIZED)
        .with_code("invalid_api_key"))
}

fn model_object(st: &AppState, id: &str) -> Value {
    json!({"id": id, "object": "model", "created": st.started, "owned_by": "hearth"})
}

async fn models(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authorize(&st, &headers)?;
    Ok(Json(json!({"object": "list", "data": st.names.iter().map(|n| model_object(&st, n)).collect::<Vec<_>>()})))
}

async fn model(State(st): State<Arc<AppState>>, headers: HeaderMap, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    authorize(&st, &headers)?;
    if !st.names.contains(&id) {
        return Err(ApiError::unknown_model(&id, &st.names));
    }
    Ok(Json(model_object(&st, &id)))
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::invalid(None, format!("no route {method} {uri}: this server answers /v1/models, /v1/chat/completions, /v1/completions and /health"))
        .with_status(StatusCode::NOT_FOUND)
}

async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    ApiError::invalid(None, format!("{uri} does not take {method}")).with_status(StatusCode::METHOD_NOT_ALLOWED)
}

async fn chat(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    respond(st, &headers, body, Kind::Chat, |b, s| parse::<ChatRequest>(b)?.check(s)).await
}

async fn completions(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    respond(st, &headers, body, Kind::Completion, |b, s| parse::<CompletionRequest>(b)?.check(s)).await
}

fn body_error(r: BytesRejection) -> ApiError {
    let message = if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        format!("the request body is larger than this server's limit of {} MiB", BODY_LIMIT >> 20)
    } else {
        r.body_text()
    };
    ApiError::invalid(None, message).with_status(r.status())
}

/// Checks the request, queues it and answers when the worker has: the whole answer, or a
/// stream once the prompt is running. If the client goes away, its receiver is dropped and
/// the worker stops generating for it.
async fn respond(
    st: Arc<AppState>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    kind: Kind,
    check: impl FnOnce(&[u8], &Served) -> Result<Request, ApiError>,
) -> Result<Response, ApiError> {
    authorize(&st, headers)?;
    let body = body.map_err(body_error)?;
    let req = check(&body, &Served { names: &st.names, tok: &st.tok, context: st.context })?;
    let n = st.next_id.fetch_add(1, Ordering::SeqCst);
    let answer = Answer {
        kind,
        id: format!("{}-{:x}{n}", if kind == Kind::Chat { "chatcmpl" } else { "cmpl" }, st.started),
        created: now(),
        model: req.model_name,
        prompt_tokens: req.prompt.len(),
    };
    let (events, mut rx) = unbounded_channel();
    if st.stats.draining.load(Ordering::SeqCst) {
        return Err(ApiError::shutting_down());
    }
    if st.stats.queued.fetch_add(1, Ordering::SeqCst) >= st.max_queue {
        st.stats.queued.fetch_sub(1, Ordering::SeqCst);
        return Err(ApiError::invalid(None, format!("{} requests are already waiting: try again shortly", st.max_queue))
            .with_status(StatusCode::TOO_MANY_REQUESTS)
            .with_code("rate_limit_exceeded"));
    }
    let job = Job { model: req.model, prompt: req.prompt, params: req.params, events };
    if st.jobs.send(job).is_err() {
        st.stats.queued.fetch_sub(1, Ordering::SeqCst);
        return Err(ApiError::shutting_down());
    }
    match rx.recv().await {
        Some(Event::Started) => {}
        Some(Event::Failed(e)) => return Err(e),
        _ => return Err(ApiError::server("the GPU worker stopped")),
    }
    if req.stream {
        return Ok(Sse::new(event_stream(answer, rx, req.include_usage)).into_response());
    }
    while let Some(event) = rx.recv().await {
        match event {
            Event::Done { text, finish, completion_tokens } => return Ok(Json(answer.full(&text, finish, completion_tokens)).into_response()),
            Event::Failed(e) => return Err(e),
            Event::Started | Event::Text(_) => {}
        }
    }
    Err(ApiError::server("the GPU worker stopped"))
}

fn data(v: &Value) -> SseEvent {
    SseEvent::default().data(v.to_string())
}

/// The worker's events as OpenAI's stream: chunks of text, the finish, the usage when asked
/// for, and `[DONE]`.
fn event_stream(answer: Answer, rx: UnboundedReceiver<Event>, include_usage: bool) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let head = match answer.kind {
        Kind::Chat => vec![data(&answer.chunk(Some(""), None, true))],
        Kind::Completion => vec![],
    };
    let events = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) });
    let body = events.flat_map(move |e| {
        let out = match e {
            Event::Started => vec![],
            Event::Text(t) => vec![data(&answer.chunk(Some(&t), None, false))],
            Event::Done { finish, completion_tokens, .. } => {
                let mut v = vec![data(&answer.chunk(None, Some(finish), false))];
                if include_usage {
                    v.push(data(&answer.usage_chunk(completion_tokens)));
                }
                v.push(SseEvent::default().data("[DONE]"));
                v
            }
            Event::Failed(e) => vec![data(&e.body())],
        };
        stream::iter(out)
    });
    stream::iter(head).chain(body).map(Ok)
}
