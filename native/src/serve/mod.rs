//! `hearth serve`: an OpenAI-compatible HTTP server (axum on tokio) for a base model and
//! any number of LoRA adapters on it, all held in GPU memory at once. HTTP runs on tokio's
//! threads; the GPU work runs on one thread of its own ([`worker`]), so `/health` answers
//! while a request generates.

mod openai;
mod routes;
mod worker;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::load::{load_on_gpu, read_adapter, ModelArgs};
use hearth_core::model::forward::KvCache;
use routes::{router, AppState};
use worker::{Engine, Stats};

#[derive(Args)]
#[command(after_help = "Examples:
  hearth serve ./SmolLM2-135M-Instruct --adapter faq=./out/adapter
  hearth serve model.gguf --adapter a=./run-a/adapter --adapter b=./b.gguf --port 8000
  hearth serve model.gguf --host 0.0.0.0 --api-key SECRET

Clients pick the adapter by its NAME in the request's \"model\" field (the base by --name):
  curl http://127.0.0.1:8080/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{\"model\": \"faq\", \"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]}'")]
pub struct ServeArgs {
    /// An HF model folder (config.json, *.safetensors, tokenizer.json) or a .gguf file: the
    /// base every adapter shares.
    pub model: PathBuf,
    /// A LoRA adapter as NAME=PATH (a PEFT folder or an adapter GGUF); requests use it with
    /// "model": "NAME". May be given several times.
    #[arg(long = "adapter", value_name = "NAME=PATH")]
    pub adapters: Vec<String>,
    /// The base model's name in requests (default: the folder's or the file's name).
    #[arg(long)]
    pub name: Option<String>,
    /// Convert the linear weights on load: f32, f16, nf4, q4_0, q4_1 or q8_0 (default: keep
    /// the file's format).
    #[arg(long)]
    pub quant: Option<String>,
    /// The longest context (prompt + answer) in tokens.
    #[arg(long, default_value_t = 2048)]
    pub ctx: usize,
    /// The address to listen on; anything but loopback needs --api-key.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Answer only requests with "Authorization: Bearer KEY".
    #[arg(long)]
    pub api_key: Option<String>,
    /// Most requests waiting for the GPU; more get 429 (Too Many Requests).
    #[arg(long, default_value_t = 64)]
    pub max_queue: usize,
    /// Most requests generating at once, decoded together when they use the same adapter
    /// (one pass over the weights for all of them). Each holds a KV cache of --ctx tokens.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub max_batch: u16,
}

/// (name, path) of each --adapter NAME=PATH, checked for clashes with the base's name.
fn adapter_args(a: &ServeArgs, base: &str) -> Result<Vec<(String, PathBuf)>> {
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for spec in &a.adapters {
        let Some((name, path)) = spec.split_once('=') else { bail!("--adapter {spec}: expected NAME=PATH, as in --adapter faq=./out/adapter") };
        if name.is_empty() || path.is_empty() {
            bail!("--adapter {spec}: expected NAME=PATH with both parts");
        }
        if name == base || out.iter().any(|(n, _)| n == name) {
            bail!("--adapter {spec}: the name {name} is taken (the base is {base}; use --name to rename it)");
        }
        out.push((name.to_string(), PathBuf::from(path)));
    }
    Ok(out)
}

fn base_name(a: &ServeArgs) -> String {
    a.name.clone().unwrap_or_else(|| {
        let p = if a.model.is_file() { a.model.file_stem() } else { a.model.file_name() };
        p.map_or_else(|| "base".into(), |s| s.to_string_lossy().into_owned())
    })
}

/// Opens the GPU and loads the base, every adapter and `max_batch` KV caches onto it.
fn load_engine(a: &ModelArgs, adapters: &[(String, PathBuf)], max_batch: usize) -> Result<Engine> {
    let ctx = crate::open_gpu()?;
    let (mut model, tok) = load_on_gpu(&ctx, a, 256)?;
    let mut held = vec![None];
    for (name, path) in adapters {
        let adapter = read_adapter(path, &model.cfg)?;
        eprintln!("adapter {name}: {} (r {}, {} parameters)", path.display(), adapter.cfg.r, adapter.trainable_params());
        held.push(Some(model.upload_adapter(&ctx, adapter, &path.display().to_string())?));
    }
    if max_batch > model.max_batch() {
        bail!("--max-batch {max_batch}: this model decodes at most {} requests at once on this GPU", model.max_batch());
    }
    // the requests' caches are made together (a batch of them attends in one launch); the
    // model's own goes back to the device first
    drop(model.take_cache(&ctx)?);
    ctx.trim_pool();
    let caches = model.new_caches(&ctx, max_batch).with_context(|| format!("{max_batch} KV caches of {} tokens: lower --max-batch or --ctx", a.ctx))?;
    let bytes: u64 = caches.iter().map(KvCache::bytes).sum();
    eprintln!("{max_batch} KV caches of {} tokens (--max-batch, --ctx): {:.0} MiB", model.context(), bytes as f64 / (1 << 20) as f64);
    Ok(Engine { ctx, model, tok: Arc::new(tok), held, caches })
}

/// Resolves on SIGTERM or Ctrl-C, and marks the server as draining.
async fn shutdown_signal(stats: Arc<Stats>) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    eprintln!("shutting down: finishing the requests in progress, refusing queued ones");
    stats.draining.store(true, Ordering::SeqCst);
}

pub fn run(a: ServeArgs) -> Result<()> {
    if !a.host.is_loopback() && a.api_key.is_none() {
        bail!("--host {} lets anyone on the network use the model: give --api-key KEY too (clients send it as \"Authorization: Bearer KEY\")", a.host);
    }
    let base = base_name(&a);
    let adapters = adapter_args(&a, &base)?;
    let model_args = ModelArgs { model: a.model.clone(), quant: a.quant.clone(), adapter: None, ctx: a.ctx };
    let stats = Arc::new(Stats::default());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (jobs, job_rx) = std::sync::mpsc::channel();
    let worker_stats = stats.clone();
    let loading = adapters.clone();
    let max_batch = a.max_batch as usize;
    let worker = std::thread::spawn(move || match load_engine(&model_args, &loading, max_batch) {
        Ok(engine) => {
            let _ = ready_tx.send(Ok((engine.tok.clone(), engine.model.context())));
            engine.run(job_rx, worker_stats);
        }
        Err(e) => {
            let _ = ready_tx.send(Err(e));
        }
    });
    let (tok, context) = ready_rx.recv().context("the GPU thread stopped while loading")??;
    let mut names = vec![base];
    names.extend(adapters.into_iter().map(|(n, _)| n));
    let state = Arc::new(AppState {
        jobs,
        stats: stats.clone(),
        names: names.clone(),
        tok,
        context,
        api_key: a.api_key.clone(),
        max_queue: a.max_queue,
        started: routes::now(),
        next_id: AtomicU64::new(0),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let addr = std::net::SocketAddr::new(a.host, a.port);
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} (is another server using the port? pick another with --port)"))?;
        let addr = listener.local_addr()?;
        eprintln!("serving {} on http://{addr}/v1 (context {context} tokens, up to {max_batch} requests at once; /health for status; Ctrl-C stops)", names.join(", "));
        axum::serve(listener, router(state)).with_graceful_shutdown(shutdown_signal(stats)).await.context("the HTTP server failed")
    })?;
    // the router and its job sender are gone: the worker ends once its queue is empty
    worker.join().map_err(|_| anyhow::anyhow!("the GPU thread panicked"))?;
    eprintln!("stopped");
    Ok(())
}
