//! The GPU side of `hearth serve`: one thread owns the GPU, the base model and every
//! adapter, and runs the requests in the order they came (first come, first served, whatever
//! adapter they ask for). Requests for the adapter that runs now are decoded together, up to
//! --max-batch at a time, each with its own KV cache: one step runs a token of each through
//! the layers as one matrix. A request for another adapter waits until those running end;
//! then the model switches, which swaps which adapter it applies (nothing is uploaded again).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use hearth_core::lora::gpu::GpuAdapter;
use hearth_core::model::forward::KvCache;
use hearth_core::model::generate::{Decoding, GenerateParams, Generation, StopReason};
use hearth_core::model::gpu_picks::decode_batch_on_gpu;
use hearth_core::model::{Model, Tokenizer};
use hearth_core::GpuContext;
use tokio::sync::mpsc::UnboundedSender;

use super::openai::ApiError;
use crate::on_cores::map_on_cores;

/// A request for the GPU: which model (0: the base, i: the i-th adapter), the prompt's ids
/// and how to sample; what happens goes back through `events`.
pub struct Job {
    pub model: usize,
    pub prompt: Vec<u32>,
    pub params: GenerateParams,
    pub events: UnboundedSender<Event>,
}

pub enum Event {
    /// The job left the queue and the prompt is running.
    Started,
    /// New text.
    Text(String),
    Done { text: String, finish: &'static str, completion_tokens: usize },
    Failed(ApiError),
}

/// What `/health` reports.
#[derive(Default)]
pub struct Stats {
    pub queued: AtomicUsize,
    pub running: AtomicUsize,
    pub served: AtomicUsize,
    /// Requests whose client left before the answer was complete.
    pub cancelled: AtomicUsize,
    /// The most requests one decode step has run together.
    pub largest_batch: AtomicUsize,
    /// Set on SIGTERM or Ctrl-C: the running requests finish, queued ones are refused.
    pub draining: AtomicBool,
}

/// The loaded model: the base and the adapters (index i + 1 for the i-th), each uploaded once,
/// and a KV cache for each request that may run at once.
pub struct Engine {
    pub ctx: GpuContext,
    pub model: Model,
    pub tok: Arc<Tokenizer>,
    /// Held adapters by model index; the slot of the one the model applies is empty.
    pub held: Vec<Option<GpuAdapter>>,
    /// --max-batch caches.
    pub caches: Vec<KvCache>,
}

/// A KV cache no request holds, and the model (base or adapter) whose keys and values it
/// holds: a later request to the same model that shares its start (a chat's earlier turns)
/// runs only the rest.
struct FreeCache {
    cache: KvCache,
    model: usize,
}

/// A request that is generating.
struct Running {
    job: Job,
    decoding: Decoding,
    cache: KvCache,
    /// The token to run next.
    next: u32,
}

impl Engine {
    /// Makes model `index` the one that runs.
    fn switch_to(&mut self, index: usize, current: &mut usize) {
        if index != *current {
            let next = self.held[index].take();
            self.held[*current] = self.model.swap_adapter(next);
            *current = index;
        }
    }

    /// Runs jobs until every sender is gone and the last request has ended.
    pub fn run(mut self, jobs: Receiver<Job>, stats: Arc<Stats>) {
        let limit = self.caches.len();
        let mut free: Vec<FreeCache> = std::mem::take(&mut self.caches).into_iter().map(|cache| FreeCache { cache, model: 0 }).collect();
        let mut waiting = VecDeque::new();
        let mut running: Vec<Running> = Vec::new();
        let mut current = 0;
        loop {
            if running.is_empty() && waiting.is_empty() {
                match jobs.recv() {
                    Ok(job) => waiting.push_back(job),
                    Err(_) => return,
                }
            }
            waiting.extend(jobs.try_iter());
            // first come, first served: one for another model waits until the running end
            while running.len() < limit && waiting.front().is_some_and(|j: &Job| running.is_empty() || j.model == current) {
                let job = waiting.pop_front().expect("checked");
                stats.queued.fetch_sub(1, Ordering::SeqCst);
                if job.events.is_closed() {
                    stats.cancelled.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
                if stats.draining.load(Ordering::SeqCst) {
                    let _ = job.events.send(Event::Failed(ApiError::shutting_down()));
                    continue;
                }
                self.switch_to(job.model, &mut current);
                let cache = take_cache(&mut free, &job);
                // (running from its prompt on: its first text goes out before start returns)
                stats.running.store(running.len() + 1, Ordering::SeqCst);
                if let Some(r) = self.start(job, cache, &mut free, &stats) {
                    running.push(r);
                }
                stats.running.store(running.len(), Ordering::SeqCst);
            }
            if !running.is_empty() {
                // whether a request that came meanwhile could join those running
                let n = running.len();
                let joins = || {
                    waiting.extend(jobs.try_iter());
                    n < limit && waiting.front().is_some_and(|j: &Job| j.model == current)
                };
                self.decode(&mut running, &mut free, &stats, joins);
                stats.running.store(running.len(), Ordering::SeqCst);
            }
        }
    }

    /// Runs `job`'s prompt into `cache` and takes its first token; None when it has already
    /// ended (its cache is then free again).
    fn start(&mut self, job: Job, mut cache: KvCache, free: &mut Vec<FreeCache>, stats: &Stats) -> Option<Running> {
        let _ = job.events.send(Event::Started);
        let events = &job.events;
        let mut on_text = |piece: &str| events.send(Event::Text(piece.to_string())).is_ok();
        self.model.swap_cache(&mut cache);
        let started = pollster::block_on(Decoding::start(&self.ctx, &mut self.model, &self.tok, &job.prompt, &job.params, &mut on_text));
        self.model.swap_cache(&mut cache);
        match started {
            Ok((decoding, Some(next))) => Some(Running { job, decoding, cache, next }),
            Ok((decoding, None)) => {
                let out = decoding.finish(&self.tok, &mut on_text).map_err(|e| e.to_string());
                end(job, out, cache, free, stats);
                None
            }
            Err(e) => {
                end(job, Err(e.to_string()), cache, free, stats);
                None
            }
        }
    }

    /// Decodes every running request (they all use the model that runs now) until one of them
    /// ends, or after a step where `joins` says a waiting request could join them: a step
    /// at a time, each run, where the GPU picks their tokens, while the host reads the one
    /// before (where one ends, the others keep the step run ahead). Those that end leave
    /// `running`.
    fn decode(&mut self, running: &mut Vec<Running>, free: &mut Vec<FreeCache>, stats: &Stats, joins: impl FnMut() -> bool) {
        stats.largest_batch.fetch_max(running.len(), Ordering::SeqCst);
        let tokens: Vec<u32> = running.iter().map(|r| r.next).collect();
        // where the GPU picks the requests' tokens, only those are read
        let stepped = if self.ctx.decode_ahead() { self.decode_picked(running, &tokens, joins) } else { self.decode_sampled(running, &tokens) };
        let outcomes = match stepped {
            Ok(o) => o,
            Err(e) => {
                for r in running.drain(..) {
                    end(r.job, Err(e.to_string()), r.cache, free, stats);
                }
                return;
            }
        };
        let mut still = Vec::with_capacity(running.len());
        for (mut r, next) in running.drain(..).zip(outcomes) {
            match next {
                Ok(Some(id)) => {
                    r.next = id;
                    still.push(r);
                }
                Ok(None) => {
                    let events = &r.job.events;
                    let mut on_text = |piece: &str| events.send(Event::Text(piece.to_string())).is_ok();
                    let out = r.decoding.finish(&self.tok, &mut on_text).map_err(|e| e.to_string());
                    end(r.job, out, r.cache, free, stats);
                }
                Err(e) => end(r.job, Err(e.to_string()), r.cache, free, stats),
            }
        }
        *running = still;
    }

    /// [`Engine::decode`]'s steps with the tokens picked on the GPU: each request's outcome
    /// after the last step (the token to run next, or None where it ended).
    fn decode_picked(&mut self, running: &mut [Running], tokens: &[u32], mut joins: impl FnMut() -> bool) -> hearth_core::Result<Vec<Outcome>> {
        let first: Vec<_> = running.iter().map(|r| r.decoding.pick()).collect();
        // (no step past the one where the last of them must end)
        let max_steps = running.iter().map(|r| r.decoding.left()).max().unwrap_or(0);
        let (mut caches, mut rows): (Vec<&mut KvCache>, Vec<(&mut Decoding, &Job)>) = running.iter_mut().map(|r| (&mut r.cache, (&mut r.decoding, &r.job))).unzip();
        let tok = &self.tok;
        let mut outcomes: Vec<Outcome> = rows.iter().map(|_| Ok(None)).collect();
        let accept = |r: usize, id| {
            let (decoding, job) = &mut rows[r];
            outcomes[r] = decoding.accept(tok, id, &mut |piece: &str| job.events.send(Event::Text(piece.to_string())).is_ok());
            Ok(matches!(outcomes[r], Ok(Some(_))))
        };
        pollster::block_on(decode_batch_on_gpu(&self.ctx, &mut self.model, &mut caches, tokens, &first, accept, |k| k < max_steps && !joins()))?;
        Ok(outcomes)
    }

    /// One step of [`Engine::decode`]'s with the logits read and each request's token sampled
    /// on the host (its text streamed), the rows at once on the machine's cores.
    fn decode_sampled(&mut self, running: &mut [Running], tokens: &[u32]) -> hearth_core::Result<Vec<Outcome>> {
        let mut caches: Vec<&mut KvCache> = running.iter_mut().map(|r| &mut r.cache).collect();
        let mut logits = pollster::block_on(self.model.decode_batch(&self.ctx, &mut caches, tokens))?;
        let tok = &self.tok;
        let rows: Vec<_> = running.iter_mut().zip(logits.chunks_exact_mut(self.model.cfg.vocab_size)).collect();
        Ok(map_on_cores(rows, |(r, row)| {
            let events = &r.job.events;
            r.decoding.next(tok, row, &mut |piece: &str| events.send(Event::Text(piece.to_string())).is_ok())
        }))
    }
}

/// What a step leaves a request: the token to run next, None where it has ended, or the error
/// that ended it.
type Outcome = hearth_core::Result<Option<u32>>;

/// The free cache for `job`: one of its model that already holds the longest start of its
/// prompt, else any (emptied).
fn take_cache(free: &mut Vec<FreeCache>, job: &Job) -> KvCache {
    let shared = |f: &FreeCache| if f.model == job.model { f.cache.cached_prefix(&job.prompt) } else { 0 };
    let best = (0..free.len()).max_by_key(|&i| shared(&free[i])).expect("a free cache for every request that may run");
    let keep = shared(&free[best]);
    let mut cache = free.swap_remove(best).cache;
    cache.rewind(keep);
    cache
}

/// Sends `job` its answer (or its error) and frees its cache.
fn end(job: Job, out: Result<Generation, String>, mut cache: KvCache, free: &mut Vec<FreeCache>, stats: &Stats) {
    let event = match out {
        // the client went away
        Ok(g) if g.stop == StopReason::Cancelled => None,
        Ok(g) => {
            let finish = if g.stop == StopReason::MaxTokens { "length" } else { "stop" };
            Some(Event::Done { text: g.text, finish, completion_tokens: g.ids.len() })
        }
        Err(e) => {
            // the cache may hold a half-run prompt
            cache.rewind(0);
            Some(Event::Failed(ApiError::server(&e)))
        }
    };
    free.push(FreeCache { cache, model: job.model });
    let answered = event.is_some_and(|e| job.events.send(e).is_ok());
    let count = if answered { &stats.served } else { &stats.cancelled };
    count.fetch_add(1, Ordering::SeqCst);
}
