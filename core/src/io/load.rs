//! A model from its files: an HF folder (config.json, safetensors shards, tokenizer files)
//! or one GGUF file. The caller supplies the bytes (native: the file system; web: storage),
//! whole or by byte ranges ([`ReadRange`]: read a tensor at a time, streamed to the GPU).

use super::gguf::Gguf;
use super::gguf_tensors::GgufSource;
use super::safetensors::{SafetensorsSource, StreamedSafetensors};
use super::ReadRange;
use crate::model::weights::{HostWeights, WeightFormat};
use crate::model::{Config, Model, ModelOptions, Tokenizer};
use crate::{Error, GpuContext, Result};

/// Read access to the files of an HF folder.
pub trait Files {
    /// The folder, for error messages.
    fn origin(&self) -> &str;
    /// The bytes of `name`, or None when there is no such file.
    fn read(&self, name: &str) -> Result<Option<Vec<u8>>>;
}

pub struct LoadedModel {
    pub cfg: Config,
    pub weights: HostWeights,
    pub tokenizer: Tokenizer,
    /// What was read, e.g. "GGUF (Q4_1 ×210, F32 ×61, Q8_0 ×1)".
    pub description: String,
}

fn text(files: &dyn Files, name: &str) -> Result<Option<String>> {
    match files.read(name)? {
        Some(b) => String::from_utf8(b).map(Some).map_err(|_| Error::bad_file(format!("{}/{name}", files.origin()), "is not UTF-8")),
        None => Ok(None),
    }
}

/// The safetensors files of a folder: the shards its index names, or model.safetensors.
pub fn shard_names(files: &dyn Files) -> Result<Vec<String>> {
    let dir = files.origin();
    if let Some(index) = text(files, "model.safetensors.index.json")? {
        let v: serde_json::Value = serde_json::from_str(&index).map_err(|e| Error::bad_file(format!("{dir}/model.safetensors.index.json"), e.to_string()).with_source(e))?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| Error::bad_file(format!("{dir}/model.safetensors.index.json"), "no weight_map object"))?;
        let mut names: Vec<String> = map.values().filter_map(|f| f.as_str().map(str::to_string)).collect();
        names.sort();
        names.dedup();
        return Ok(names);
    }
    Ok(vec!["model.safetensors".to_string()])
}

pub fn load_hf_folder(files: &dyn Files, quant: Option<WeightFormat>) -> Result<LoadedModel> {
    let (cfg, tokenizer) = hf_config(files)?;
    let mut shards = Vec::new();
    for name in shard_names(files)? {
        let bytes = files.read(&name)?.ok_or_else(|| missing(files, &name, "the weights"))?;
        shards.push((name, bytes));
    }
    let src = SafetensorsSource::new(files.origin(), &shards)?;
    let weights = HostWeights::load(&cfg, &src, quant)?;
    let description = format!("HF folder, {} safetensors file(s)", shards.len());
    Ok(LoadedModel { cfg, weights, tokenizer, description })
}

/// A model on the GPU and what came with it.
pub struct GpuLoaded {
    pub model: Model,
    pub tokenizer: Tokenizer,
    pub description: String,
}

/// An HF folder whose small files come from `files` and whose safetensors shards are read a
/// tensor at a time through `weights` (the web page: its files stay in browser storage), bf16
/// weights kept in 16 bits (as f16) when `bf16_as_f16`, straight onto the GPU: each layer is
/// read, converted and uploaded before the next ([`Model::stream`]), so the host never holds
/// the whole model.
/// `opts` gives the model's options from its config.
pub fn stream_hf_folder(ctx: &GpuContext, files: &dyn Files, weights: &dyn ReadRange, quant: Option<WeightFormat>, bf16_as_f16: bool, opts: &dyn Fn(&Config) -> ModelOptions) -> Result<GpuLoaded> {
    let (cfg, tokenizer) = hf_config(files)?;
    let names = shard_names(files)?;
    let src = StreamedSafetensors::new(files.origin(), &names, weights, bf16_as_f16)?;
    let model = Model::stream(ctx, &cfg, &src, quant, opts(&cfg))?;
    Ok(GpuLoaded { model, tokenizer, description: format!("HF folder, {} safetensors file(s), streamed to the GPU", names.len()) })
}

fn missing(files: &dyn Files, name: &str, what: &str) -> Error {
    Error::bad_file(files.origin(), format!("{name} is missing ({what})"))
}

/// The config and the tokenizer of an HF folder.
fn hf_config(files: &dyn Files) -> Result<(Config, Tokenizer)> {
    let dir = files.origin();
    let config = text(files, "config.json")?.ok_or_else(|| missing(files, "config.json", "an HF model folder needs it"))?;
    let cfg = Config::from_hf_json(&config, &format!("{dir}/config.json"))?;
    let tokenizer_json = files.read("tokenizer.json")?.ok_or_else(|| missing(files, "tokenizer.json", "Hearth reads HF fast tokenizers"))?;
    let mut tokenizer = Tokenizer::from_hf(&tokenizer_json, text(files, "tokenizer_config.json")?.as_deref(), text(files, "generation_config.json")?.as_deref(), dir)?;
    // transformers 5 writes the template to its own file
    if let Some(t) = text(files, "chat_template.jinja")? {
        tokenizer.chat_template = Some(t);
    }
    Ok((cfg, tokenizer))
}

pub fn load_gguf(bytes: &[u8], file: &str, quant: Option<WeightFormat>) -> Result<LoadedModel> {
    let g = Gguf::parse(bytes, file)?;
    let (cfg, tokenizer) = gguf_config(&g, file)?;
    let weights = HostWeights::load(&cfg, &GgufSource::new(&g, file, &cfg, false), quant)?;
    Ok(LoadedModel { cfg, weights, tokenizer, description: gguf_description(&g) })
}

/// The GGUF file `name` of `reader` (`file` names it in errors) read a tensor at a time,
/// straight onto the GPU a layer at a time, as [`stream_hf_folder`] does: the host holds the
/// file's header and one layer, never the file or the whole model. bf16 weights stay in 16
/// bits (as f16) when `bf16_as_f16`.
pub fn stream_gguf(ctx: &GpuContext, reader: &dyn ReadRange, name: &str, file: &str, quant: Option<WeightFormat>, bf16_as_f16: bool, opts: &dyn Fn(&Config) -> ModelOptions) -> Result<GpuLoaded> {
    let g = Gguf::read(reader, name, file)?;
    let (cfg, tokenizer) = gguf_config(&g, file)?;
    let model = Model::stream(ctx, &cfg, &GgufSource::new(&g, file, &cfg, bf16_as_f16), quant, opts(&cfg))?;
    Ok(GpuLoaded { model, tokenizer, description: format!("{}, streamed to the GPU", gguf_description(&g)) })
}

fn gguf_config(g: &Gguf, file: &str) -> Result<(Config, Tokenizer)> {
    Ok((Config::from_gguf(g, file)?, Tokenizer::from_gguf(g, file)?))
}

/// What a GGUF file holds, e.g. "GGUF v3 (Q4_1 ×210, F32 ×61, Q8_0 ×1)".
fn gguf_description(g: &Gguf) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for t in &g.tensors {
        let name = format!("{:?}", t.ty);
        match counts.iter_mut().find(|(n, _)| *n == name) {
            Some((_, c)) => *c += 1,
            None => counts.push((name, 1)),
        }
    }
    let types: Vec<String> = counts.iter().map(|(n, c)| format!("{n} ×{c}")).collect();
    format!("GGUF v3 ({})", types.join(", "))
}
