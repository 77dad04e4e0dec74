//! `hearth export`: a model (GGUF or HF folder) written as an HF folder transformers loads.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

use clap::Args;
use hearth_core::io::hf_export::{hf_folder, ExportDtype};
use hearth_core::io::load::LoadedModel;

use crate::load::{load, ModelArgs};

#[derive(Args)]
#[command(after_help = "Example:\n  hearth export SmolLM2-135M-Instruct.Q4_1.gguf --out ./smollm2-hf --dtype f32")]
pub struct ExportArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The folder to write (created; existing files of the same names are replaced).
    #[arg(long)]
    pub out: PathBuf,
    /// Tensor type of model.safetensors: f32, f16 or bf16 (quantized weights are dequantized).
    #[arg(long, default_value = "f32")]
    pub dtype: String,
}

/// Writes `bytes` to `path` through a temporary file and a rename, so that a reader never
/// sees half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp-hearth");
    std::fs::write(&tmp, bytes).with_context(|| tmp.display().to_string())?;
    std::fs::rename(&tmp, path).with_context(|| path.display().to_string())
}

/// Writes `m` as an HF folder into `out` (created), each file atomically; returns how many
/// files it wrote.
pub fn write_hf_folder(out: &Path, m: &LoadedModel, dtype: ExportDtype) -> Result<usize> {
    let files = hf_folder(&m.cfg, &m.weights, &m.tokenizer, dtype)?;
    std::fs::create_dir_all(out).with_context(|| out.display().to_string())?;
    for (name, bytes) in &files {
        write_atomic(&out.join(name), bytes)?;
    }
    Ok(files.len())
}

pub fn run(a: ExportArgs) -> Result<()> {
    let dtype = ExportDtype::parse(&a.dtype)?;
    let m = load(&a.model)?;
    let n = write_hf_folder(&a.out, &m, dtype)?;
    eprintln!("wrote {} ({n} files, {})", a.out.display(), a.dtype);
    Ok(())
}
