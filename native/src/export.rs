//! `hearth export`: a model (GGUF or HF folder) written as an HF folder transformers loads, or
//! as one GGUF file llama.cpp loads (`--format gguf`).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

use clap::Args;
use hearth_core::io::gguf_export::{gguf_bytes, GgufDtype};
use hearth_core::io::hf_export::{hf_folder, ExportDtype};
use hearth_core::io::load::LoadedModel;
use hearth_core::io::ollama::{modelfile, ModelfileSource};

use crate::load::{load, load_base_and_adapter, ModelArgs};

#[derive(Args)]
#[command(after_help = "Examples:\n  hearth export SmolLM2-135M-Instruct.Q4_1.gguf --out ./smollm2-hf --dtype f32\n  hearth export ./smollm2-hf --out smollm2.q8_0.gguf --format gguf --dtype q8_0")]
pub struct ExportArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Where and how a model is written (export and merge).
#[derive(Args, Clone)]
pub struct OutputArgs {
    /// The folder to write (hf: created; existing files of the same names are replaced), or
    /// the .gguf file (gguf).
    #[arg(long)]
    pub out: PathBuf,
    /// hf: an HF folder (config.json, model.safetensors, tokenizer files) for transformers;
    /// gguf: one GGUF file for llama.cpp, Ollama and LM Studio.
    #[arg(long, default_value = "hf", value_parser = ["hf", "gguf"])]
    pub format: String,
    /// Tensor type: f32, f16 or bf16 (hf and gguf), q8_0, q4_0 or q4_1 (gguf; llama.cpp's
    /// rounding). Quantized weights are dequantized first.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Also write an Ollama Modelfile beside the GGUF (NAME.Modelfile: FROM, TEMPLATE in
    /// Ollama's syntax, SYSTEM, stop strings, num_ctx), for `ollama create NAME -f` it.
    #[arg(long)]
    pub ollama: bool,
    /// general.name in the GGUF (default: the model's, or the adapter's, folder or file
    /// name). llama.cpp reads it: a name with "phi3" in it makes it expect Phi-3's tokens.
    #[arg(long)]
    pub name: Option<String>,
}

impl OutputArgs {
    /// Writes `m` as asked; returns what was written, for the closing line.
    pub fn write(&self, m: &LoadedModel, name: &str) -> Result<String> {
        if self.format == "gguf" {
            let bytes = gguf_bytes(&m.cfg, &m.weights, &m.tokenizer, GgufDtype::parse(&self.dtype)?, self.name.as_deref().unwrap_or(name))?;
            // the Modelfile is checked before anything is written
            let modelfile = self.ollama.then(|| {
                let from = format!("./{}", self.out.file_name().map(|n| n.to_string_lossy()).unwrap_or_default());
                ollama_modelfile(m, &from, None)
            });
            let modelfile = modelfile.transpose()?;
            write_atomic(&self.out, &bytes)?;
            let mut done = format!("{} (GGUF, {}, {:.1} MiB)", self.out.display(), self.dtype, bytes.len() as f64 / (1u64 << 20) as f64);
            if let Some(text) = modelfile {
                done += &write_modelfile(&self.out, &text)?;
            }
            return Ok(done);
        }
        if self.ollama {
            bail!("--ollama writes a Modelfile for a GGUF file: add --format gguf");
        }
        let n = write_hf_folder(&self.out, m, ExportDtype::parse(&self.dtype)?)?;
        Ok(format!("{} ({n} files, {})", self.out.display(), self.dtype))
    }
}

/// The Modelfile for `m` (its chat template and context) with FROM `from` (and ADAPTER).
fn ollama_modelfile(m: &LoadedModel, from: &str, adapter: Option<&str>) -> Result<String> {
    let tok = &m.tokenizer;
    let adds_bos = tok.bos_id.is_some() && tok.encode("a", true)?.first() == tok.bos_id.as_ref();
    let src = ModelfileSource { from, adapter, context: m.cfg.max_seq_len.min(OLLAMA_CONTEXT) };
    modelfile(tok, &src, adds_bos).context("--ollama")
}

/// num_ctx at most: Ollama allocates the whole context, so a model's full context (32k and
/// more) would take more memory than most machines have for it.
const OLLAMA_CONTEXT: usize = 8192;

/// Writes `text` as NAME.Modelfile beside `gguf`; returns the line that says so.
fn write_modelfile(gguf: &Path, text: &str) -> Result<String> {
    let path = gguf.with_extension("Modelfile");
    write_atomic(&path, text.as_bytes())?;
    let name = gguf.file_stem().map(|s| s.to_string_lossy().to_lowercase()).unwrap_or_default();
    Ok(format!("\nand {} (ollama create {name} -f {})", path.display(), path.display()))
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

#[derive(Args)]
#[command(after_help = "Example:\n  hearth export-adapter SmolLM2-135M-Instruct.Q4_1.gguf --adapter runs/faq --out faq-lora.gguf\n  llama-cli -m SmolLM2-135M-Instruct.Q4_1.gguf --lora faq-lora.gguf\n\nThe model is the base the adapter was trained on (its family fixes the tensor names).")]
pub struct ExportAdapterArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The .gguf file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Also write an Ollama Modelfile beside it (FROM the base model, ADAPTER this file,
    /// and the base's chat template, system prompt and stop strings).
    #[arg(long)]
    pub ollama: bool,
}

/// `hearth export-adapter`: a PEFT adapter as a LoRA adapter GGUF for llama.cpp and Ollama.
pub fn run_adapter(a: ExportAdapterArgs) -> Result<()> {
    let (m, adapter, _) = load_base_and_adapter(&a.model, "write")?;
    let bytes = hearth_core::lora::gguf::adapter_gguf_bytes(&adapter, &m.cfg)?;
    let modelfile = if a.ollama {
        let base = std::path::absolute(&a.model.model).with_context(|| a.model.model.display().to_string())?;
        let file = format!("./{}", a.out.file_name().map(|n| n.to_string_lossy()).unwrap_or_default());
        Some(ollama_modelfile(&m, &base.display().to_string(), Some(&file))?)
    } else {
        None
    };
    write_atomic(&a.out, &bytes)?;
    let mut done = format!("{} ({} adapted layers, r {}, alpha {})", a.out.display(), adapter.tensors.len(), adapter.cfg.r, adapter.cfg.alpha);
    if let Some(text) = modelfile {
        done += &write_modelfile(&a.out, &text)?;
    }
    eprintln!("wrote {done}");
    Ok(())
}

pub fn run(a: ExportArgs) -> Result<()> {
    let m = load(&a.model)?;
    let name = a.model.model.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    eprintln!("wrote {}", a.output.write(&m, &name)?);
    Ok(())
}
