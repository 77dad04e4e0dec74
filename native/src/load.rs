//! MODEL arguments: an HF folder or a .gguf file, read from disk into hearth-core's loaders.

use anyhow::{bail, Context, Result};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use clap::Args;
use hearth_core::io::gguf::Gguf;
use hearth_core::io::gguf_tensors::format_on_load;
use hearth_core::io::load::{load_gguf, load_hf_folder, Files, LoadedModel};
use hearth_core::io::ReadRange;
use hearth_core::lora::{peft, Adapter};
use hearth_core::model::{Config, Model, ModelOptions, WeightFormat};
use hearth_core::{GpuContext, Result as CoreResult};

/// Options every command that runs a model takes.
#[derive(Args, Clone, Debug)]
pub struct ModelArgs {
    /// An HF model folder (config.json, *.safetensors, tokenizer.json) or a .gguf file.
    pub model: PathBuf,
    /// Convert the linear weights on load: f32, f16, nf4, q4_0, q4_1 or q8_0 (default: keep
    /// the file's format).
    #[arg(long)]
    pub quant: Option<String>,
    /// A PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors), from
    /// `hearth train` or from PEFT, or a LoRA adapter GGUF (llama.cpp's, `hearth
    /// export-adapter`).
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// The longest context (KV cache length) in tokens.
    #[arg(long, default_value_t = 2048)]
    pub ctx: usize,
}

pub struct DirFiles {
    pub dir: PathBuf,
    pub origin: String,
}

impl Files for DirFiles {
    fn origin(&self) -> &str {
        &self.origin
    }

    fn read(&self, name: &str) -> CoreResult<Option<Vec<u8>>> {
        let path = self.dir.join(name);
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(hearth_core::Error::io(path.display(), e)),
        }
    }
}

/// Files on disk read by byte range (a file path as the name): a GGUF's header without its
/// tensors.
struct DiskRanges;

impl ReadRange for DiskRanges {
    fn len(&self, file: &str) -> CoreResult<u64> {
        std::fs::metadata(file).map(|m| m.len()).map_err(|e| hearth_core::Error::io(file, e))
    }

    fn read(&self, file: &str, start: u64, end: u64) -> CoreResult<Vec<u8>> {
        let mut bytes = vec![0; (end - start) as usize];
        let mut f = std::fs::File::open(file).map_err(|e| hearth_core::Error::io(file, e))?;
        f.seek(SeekFrom::Start(start)).and_then(|_| f.read_exact(&mut bytes)).map_err(|e| hearth_core::Error::io(file, e))?;
        Ok(bytes)
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| path.display().to_string())
}

fn check_exists(path: &Path) -> Result<()> {
    if !path.exists() {
        bail!("{}: no such file or folder (expected an HF model folder or a .gguf file)", path.display());
    }
    Ok(())
}

fn is_gguf(path: &Path) -> bool {
    path.is_file()
}

/// Reads only the config (fast: no weights are read).
/// The config, the kind of file and the format the lm_head loads in (from a GGUF file's
/// tensor; f32 for an HF folder, whose f16 heads load as f16 and take less).
pub fn load_config(path: &Path) -> Result<(Config, String, WeightFormat)> {
    check_exists(path)?;
    if is_gguf(path) {
        let file = path.display().to_string();
        let g = Gguf::read(&DiskRanges, &file, &file)?;
        let head = g.tensor("output.weight").or_else(|| g.tensor("token_embd.weight")).map_or(WeightFormat::F32, format_on_load);
        return Ok((Config::from_gguf(&g, &file)?, "GGUF".into(), head));
    }
    let cfg_path = path.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).with_context(|| cfg_path.display().to_string())?;
    Ok((Config::from_hf_json(&text, &cfg_path.display().to_string())?, "HF folder".into(), WeightFormat::F32))
}

/// A PEFT adapter folder, or an adapter GGUF (llama.cpp's) for the model `cfg`.
pub fn read_adapter(dir: &Path, cfg: &Config) -> Result<Adapter> {
    if is_gguf(dir) {
        let origin = dir.display().to_string();
        return Ok(hearth_core::lora::gguf::read_gguf_adapter(&read_file(dir)?, &origin, cfg)?);
    }
    let config_path = dir.join(peft::CONFIG_FILE);
    let config = std::fs::read_to_string(&config_path).with_context(|| format!("{} (expected a PEFT adapter folder)", config_path.display()))?;
    let weights = read_file(&dir.join(peft::WEIGHTS_FILE))?;
    Ok(peft::read(&config, &weights, &dir.display().to_string())?)
}

pub fn load(args: &ModelArgs) -> Result<LoadedModel> {
    let quant = args.quant.as_deref().map(WeightFormat::parse).transpose()?;
    let path = &args.model;
    check_exists(path)?;
    let loaded = if is_gguf(path) {
        let bytes = read_file(path)?;
        load_gguf(&bytes, &path.display().to_string(), quant)
    } else {
        load_hf_folder(&DirFiles { dir: path.clone(), origin: path.display().to_string() }, quant)
    };
    Ok(loaded?)
}

/// The base model (without the adapter) and the adapter `--adapter` names, checked against
/// the model's shapes; the flag is required (`what`: what the adapter is for, in the error).
pub fn load_base_and_adapter(args: &ModelArgs, what: &str) -> Result<(LoadedModel, Adapter, PathBuf)> {
    let dir = args.adapter.clone().with_context(|| format!("--adapter DIR is required: the adapter to {what}"))?;
    let base = ModelArgs { adapter: None, ..args.clone() };
    let m = load(&base)?;
    let adapter = read_adapter(&dir, &m.cfg)?;
    adapter.check_against(&m.cfg, &dir.display().to_string())?;
    Ok((m, adapter, dir))
}

/// Loads the model and puts it on the GPU.
pub fn load_on_gpu(ctx: &GpuContext, args: &ModelArgs, chunk: usize) -> Result<(Model, hearth_core::model::Tokenizer)> {
    let loaded = load(args)?;
    let max_seq = args.ctx.min(loaded.cfg.max_seq_len).max(1);
    eprintln!(
        "model: {} {} layers, C {}, {} heads ({} KV), vocab {} — {}",
        loaded.cfg.arch.name(),
        loaded.cfg.n_layers,
        loaded.cfg.hidden_size,
        loaded.cfg.n_heads,
        loaded.cfg.n_kv_heads,
        loaded.cfg.vocab_size,
        loaded.description
    );
    let mut model = Model::new(ctx, &loaded.cfg, loaded.weights, ModelOptions { chunk, max_seq, max_binding: None })?;
    if let Some(dir) = &args.adapter {
        let adapter = read_adapter(dir, &loaded.cfg)?;
        eprintln!("adapter: {} ({} layers adapted, r {}, {} parameters)", dir.display(), adapter.tensors.len(), adapter.cfg.r, adapter.trainable_params());
        model.set_adapter(ctx, Some(adapter), &dir.display().to_string())?;
    }
    Ok((model, loaded.tokenizer))
}
