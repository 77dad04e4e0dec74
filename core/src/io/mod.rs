//! File formats, bytes in and out: the caller owns files (native) or browser storage (web).

pub mod gguf;
pub mod gguf_export;
pub mod gguf_tensors;
mod gguf_vocab;
pub mod gguf_write;
pub mod hf_export;
pub mod load;
pub mod ollama;
pub mod safetensors;
