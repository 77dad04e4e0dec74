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

/// Reads bytes `start..end` of a file: how a file kept elsewhere (the web page's browser
/// storage) is read a tensor at a time.
pub trait ReadRange {
    /// The file's length in bytes.
    fn len(&self, file: &str) -> crate::Result<u64>;
    fn read(&self, file: &str, start: u64, end: u64) -> crate::Result<Vec<u8>>;
}
