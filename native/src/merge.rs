//! `hearth merge`: the base model with an adapter folded in (W + scale·B·A), as an HF folder
//! or one GGUF file (`--format gguf`).

use anyhow::Result;

use clap::Args;
use hearth_core::lora::merge::merge_into;

use crate::export::OutputArgs;
use crate::load::{load_base_and_adapter, ModelArgs};

#[derive(Args)]
#[command(after_help = "Examples:\n  hearth merge SmolLM2-135M-Instruct.Q4_1.gguf --adapter runs/faq --out ./smollm2-faq --dtype f16\n  hearth merge SmolLM2-135M-Instruct.Q4_1.gguf --adapter runs/faq --out faq.q8_0.gguf --format gguf --dtype q8_0\n\nQuantized weights are dequantized before the adapter is added.")]
pub struct MergeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

pub fn run(a: MergeArgs) -> Result<()> {
    let (mut m, adapter, dir) = load_base_and_adapter(&a.model, "merge")?;
    merge_into(&mut m.weights, &adapter);
    let name = dir.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    eprintln!("merged {} adapted layers of {} into {}", adapter.tensors.len(), dir.display(), a.output.write(&m, &name)?);
    Ok(())
}
