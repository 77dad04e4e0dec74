//! `hearth merge`: the base model with an adapter folded in (W + scale·B·A), as an HF folder.

use anyhow::{Context, Result};
use std::path::PathBuf;

use clap::Args;
use hearth_core::io::hf_export::ExportDtype;
use hearth_core::lora::merge::merge_into;

use crate::export::write_hf_folder;
use crate::load::{load, read_adapter, ModelArgs};

#[derive(Args)]
#[command(after_help = "Example:\n  hearth merge SmolLM2-135M-Instruct.Q4_1.gguf --adapter runs/faq --out ./smollm2-faq --dtype f16\n\nQuantized weights are dequantized before the adapter is added.")]
pub struct MergeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The folder to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Tensor type of model.safetensors: f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
}

pub fn run(a: MergeArgs) -> Result<()> {
    let dtype = ExportDtype::parse(&a.dtype)?;
    let dir = a.model.adapter.clone().context("--adapter DIR is required: the adapter to merge")?;
    let adapter = read_adapter(&dir)?;
    let mut args = a.model.clone();
    args.adapter = None;
    let mut m = load(&args)?;
    adapter.check_against(&m.cfg, &dir.display().to_string())?;
    merge_into(&mut m.weights, &adapter);
    write_hf_folder(&a.out, &m, dtype)?;
    eprintln!("merged {} layers of {} into {} ({})", adapter.tensors.len(), dir.display(), a.out.display(), a.dtype);
    Ok(())
}
