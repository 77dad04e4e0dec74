//! The decoder: Config, host weights and their sources, the GPU forward with a KV cache,
//! the tokenizer and chat template, sampling and generation.

pub mod backward;
mod batch;
mod block;
pub mod chat;
pub mod config;
pub mod forward;
pub mod generate;
pub mod gguf_tokenizer;
pub mod gpu_picks;
pub mod linear;
pub mod sampling;
pub mod tokenizer;
pub mod weights;

pub use config::{Arch, Config};
pub use forward::{Model, ModelOptions};
pub use tokenizer::Tokenizer;
pub use weights::{HostWeights, Matrix, WeightFormat};
