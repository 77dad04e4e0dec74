//! The GPU side of `hearth serve`: one thread owns the GPU, the base model and every
//! adapter, and runs the queued requests one at a time, in the order they came (first come,
//! first served, whatever adapter they ask for). Switching adapters swaps which one the
//! model applies; nothing is uploaded again.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use hearth_core::lora::gpu::GpuAdapter;
use hearth_core::model::generate::{generate_until, GenerateParams, StopReason};
use hearth_core::model::{Model, Tokenizer};
use hearth_core::GpuContext;
use tokio::sync::mpsc::UnboundedSender;

use super::openai::ApiError;

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
    /// Set on SIGTERM or Ctrl-C: the running request finishes, queued ones are refused.
    pub draining: AtomicBool,
}

/// The loaded model: the base and the adapters (index i + 1 for the i-th), each uploaded once.
pub struct Engine {
    pub ctx: GpuContext,
    pub model: Model,
    pub tok: Arc<Tokenizer>,
    /// Held adapters by model index; the slot of the one the model applies is empty.
    pub held: Vec<Option<GpuAdapter>>,
}

impl Engine {
    /// Makes model `index` the one that runs (the KV cache is emptied when it changes).
    fn switch_to(&mut self, index: usize, current: &mut usize) {
        if index != *current {
            let next = self.held[index].take();
            self.held[*current] = self.model.swap_adapter(next);
            *current = index;
        }
    }

    /// Runs jobs until every sender is gone.
    pub fn run(mut self, jobs: Receiver<Job>, stats: Arc<Stats>) {
        let mut current = 0;
        while let Ok(job) = jobs.recv() {
            stats.queued.fetch_sub(1, Ordering::SeqCst);
            if job.events.is_closed() {
                stats.cancelled.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            if stats.draining.load(Ordering::SeqCst) {
                let _ = job.events.send(Event::Failed(ApiError::shutting_down()));
                continue;
            }
            stats.running.store(1, Ordering::SeqCst);
            self.switch_to(job.model, &mut current);
            let _ = job.events.send(Event::Started);
            let events = &job.events;
            let out = pollster::block_on(generate_until(&self.ctx, &mut self.model, &self.tok, &job.prompt, &job.params, |piece| {
                events.send(Event::Text(piece.to_string())).is_ok()
            }));
            stats.running.store(0, Ordering::SeqCst);
            let event = match out {
                Ok(g) => {
                    let finish = match g.stop {
                        StopReason::Eos | StopReason::StopString => "stop",
                        StopReason::MaxTokens => "length",
                        StopReason::Cancelled => {
                            stats.cancelled.fetch_add(1, Ordering::SeqCst);
                            continue;
                        }
                    };
                    Event::Done { text: g.text, finish, completion_tokens: g.ids.len() }
                }
                Err(e) => {
                    // the cache may hold a half-run prompt
                    self.model.reset();
                    Event::Failed(ApiError::server(&e.to_string()))
                }
            };
            if job.events.send(event).is_ok() {
                stats.served.fetch_add(1, Ordering::SeqCst);
            } else {
                stats.cancelled.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}
