//! The `hearth` command-line tool.

mod bench;
mod bench_generate;
mod bench_train;
mod demo;
mod eval;
mod export;
mod generate;
mod info;
mod kernel_stats;
mod load;
mod merge;
mod on_cores;
mod score;
mod selftest;
mod serve;
mod settings_args;
mod tile_tuning;
mod tokenize;
mod train;
mod web;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use hearth_core::gpu::{ContextOptions, KernelPaths, ShaderChecks, TileChoice};
use hearth_core::ops::attention::AttentionKernels;
use hearth_core::{Error, GpuContext};

#[derive(Parser)]
#[command(name = "hearth", version, about = "Fine-tune small language models with LoRA and QLoRA on any GPU")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the GPU adapter and check every kernel against its CPU reference.
    ///
    /// Example: hearth selftest
    Selftest,
    /// Describe a model: architecture, sizes, parameters, memory per format and for training.
    Info(info::InfoArgs),
    /// Mean negative log-likelihood per token and perplexity of a text.
    Score(score::ScoreArgs),
    /// Continue a prompt (greedy or sampled), streaming the text.
    Generate(generate::GenerateArgs),
    /// Talk to the model in the terminal; the history goes through its chat template.
    Chat(generate::ChatArgs),
    /// Fine-tune on the bundled customer-service data and show answers before and after.
    Demo(demo::DemoArgs),
    /// Fine-tune a LoRA or QLoRA adapter on a data file.
    Train(Box<train::TrainArgs>),
    /// Loss and perplexity over the response tokens of a data file.
    Eval(Box<eval::EvalArgs>),
    /// Fold an adapter into the base weights and write an HF folder or a GGUF file.
    Merge(merge::MergeArgs),
    /// Write a model (GGUF or HF folder) as an HF folder transformers loads or a GGUF file
    /// llama.cpp loads.
    Export(export::ExportArgs),
    /// Write a LoRA adapter as a GGUF file for llama.cpp (--lora) and Ollama (ADAPTER).
    ExportAdapter(export::ExportAdapterArgs),
    /// The token ids of a text.
    Tokenize(tokenize::TokenizeArgs),
    /// Serve the model and its adapters over an OpenAI-compatible HTTP API.
    Serve(serve::ServeArgs),
    /// Serve the web page and a folder of models to a classroom (--https for the LAN).
    Web(web::WebArgs),
    /// Measure speed.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// Opens the GPU named by HEARTH_ADAPTER (a substring of its name), or the default one,
/// with the kernels HEARTH_KERNELS names (gpu, software or llvmpipe; default: the adapter's
/// own) and the attention HEARTH_ATTENTION names (rows, tiled, matmul or flash; the flash
/// kernels' dk and dv in launches of their own where HEARTH_FLASH_KV=apart), without
/// subgroup operations where HEARTH_SUBGROUPS=0, with forwards and input gradients in f16
/// where HEARTH_F16_MATMUL=1 (on cooperative matrices, or in f16 tiles with shader-f16; the
/// cooperative matrices' staging a stage ahead where HEARTH_COOP_PREFETCH=1), the
/// kernels with the wgpu safeguards HEARTH_SHADER_CHECKS names (ShaderChecks), the tiled kernels'
/// tiles and split reductions as HEARTH_TILES, HEARTH_SPLIT_WORKGROUPS,
/// HEARTH_SPLIT_MIN_STEPS and HEARTH_THIN_SPLIT (WORKGROUPS,STEPS or same) say (to compare
/// with the heuristics on a GPU), the tile size tuned for the GPU as HEARTH_TUNE says
/// (tile_tuning.rs), decoding's tokens picked on the host where HEARTH_DECODE_AHEAD=0, the
/// tiled matmuls loading each step's values just before they stage them (not a step ahead)
/// or a step ahead as HEARTH_TILE_PREFETCH says (over the tuning), the f32 tiles of 128
/// staging 16 reduction steps per iteration where HEARTH_TILE_STEPS=16 (8 where =8; unset: as
/// tuned), 64 columns wide where HEARTH_TILE_COLUMNS=64 (128 where =128; unset: as tuned) and
/// kept twice in workgroup memory where HEARTH_TILE_BUFFERS=2 (once where =1; unset: as
/// tuned), and says which it picked.
pub fn open_gpu() -> Result<GpuContext> {
    let filter = std::env::var("HEARTH_ADAPTER").ok();
    let f16_matmuls = match std::env::var("HEARTH_F16_MATMUL").as_deref() {
        Ok("1") => true,
        Ok("0") | Err(_) => false,
        Ok(other) => bail!("HEARTH_F16_MATMUL={other:?}: expected 1 (forwards and input gradients in f16, summed in f32) or 0 (f32, the default)"),
    };
    let shader_checks = match std::env::var("HEARTH_SHADER_CHECKS") {
        Ok(value) => ShaderChecks::parse(&value)?,
        Err(_) => ShaderChecks::DEFAULT,
    };
    let options = ContextOptions { cooperative_matrix: f16_matmuls, shader_checks };
    let mut ctx = pollster::block_on(GpuContext::new_with(filter.as_deref(), options))?.with_f16_matmuls(f16_matmuls);
    if f16_matmuls && !ctx.f16_matmuls() {
        eprintln!("HEARTH_F16_MATMUL=1: this adapter has neither shader-f16 nor cooperative matrices (`hearth selftest` says what it offers); the matmuls stay f32");
    }
    if let Ok(name) = std::env::var("HEARTH_KERNELS") {
        let paths = match name.to_lowercase().as_str() {
            "gpu" => KernelPaths::Gpu,
            "software" => KernelPaths::Software,
            "llvmpipe" => KernelPaths::Llvmpipe,
            other => bail!("HEARTH_KERNELS={other:?}: expected gpu, software or llvmpipe"),
        };
        ctx = ctx.with_kernel_paths(paths);
    }
    if let Ok(name) = std::env::var("HEARTH_ATTENTION") {
        ctx = ctx.with_attention_kernels(AttentionKernels::parse(&name).context("HEARTH_ATTENTION")?);
    }
    match std::env::var("HEARTH_FLASH_KV").as_deref() {
        Ok("apart") => ctx = ctx.with_flash_kv_apart(true),
        Ok("together") | Err(_) => {}
        Ok(other) => bail!("HEARTH_FLASH_KV={other:?}: expected together (the flash kernels' dk and dv in one launch, the default) or apart (dv's launch, then dk's)"),
    }
    match std::env::var("HEARTH_COOP_PREFETCH").as_deref() {
        Ok("1") => ctx = ctx.with_coop_prefetch(true),
        Ok("0") | Err(_) => {}
        Ok(other) => bail!("HEARTH_COOP_PREFETCH={other:?}: expected 0 (the cooperative-matrix matmul loads each stage's values just before it stages them, the default) or 1 (a stage ahead, during the previous stage's products)"),
    }
    let tiles = TileChoice {
        side: match std::env::var("HEARTH_TILES").as_deref() {
            Ok("64") => Some(64),
            Ok("128") => Some(128),
            Err(_) => None,
            Ok(other) => bail!("HEARTH_TILES={other:?}: expected 64 or 128 (the tiled kernels' output tiles, whatever the output's size; unset: 128 from a million outputs, or as tuned for the GPU)"),
        },
        wide_outputs: None,
        coop_wide_outputs: None,
        split_workgroups: match std::env::var("HEARTH_SPLIT_WORKGROUPS") {
            Ok(n) => match n.parse::<usize>() {
                Ok(w) if w >= 2 => Some(w),
                _ => bail!("HEARTH_SPLIT_WORKGROUPS={n:?}: expected a number of workgroups, at least 2, that a tiled launch of few tiles splits its reduction towards (unset: 64)"),
            },
            Err(_) => None,
        },
        split_min_steps: match std::env::var("HEARTH_SPLIT_MIN_STEPS") {
            Ok(n) => match n.parse::<usize>() {
                Ok(s) if hearth_core::ops::matmul::valid_split_min_steps(s) => Some(s),
                _ => bail!("HEARTH_SPLIT_MIN_STEPS={n:?}: expected the fewest steps of each part of a split reduction, a multiple of 8 from 8 to 4096 (unset: 256)"),
            },
            Err(_) => None,
        },
        thin_split: match std::env::var("HEARTH_THIN_SPLIT") {
            // (after the tuning, below)
            Ok(v) if v == "same" => None,
            Ok(v) => match v.split_once(',').map(|(w, s)| (w.trim().parse::<usize>(), s.trim().parse::<usize>())) {
                Some((Ok(w), Ok(s))) if w >= 2 && hearth_core::ops::matmul::valid_split_min_steps(s) => Some((w, s)),
                _ => bail!("HEARTH_THIN_SPLIT={v:?}: expected WORKGROUPS,STEPS (say 1024,16): the workgroups a launch in thin tiles (64 × 32, LoRA's x·Aᵀ and dh) splits its reduction towards, at least 2, and the fewest steps of each part, a multiple of 8 from 8 to 4096; or same (as the other launches split, whatever the tuning says; unset: as tuned, else as the others)"),
            },
            Err(_) => None,
        },
        // (tuned only)
        long_wide: false,
        prefetch: match std::env::var("HEARTH_TILE_PREFETCH").as_deref() {
            Ok("0") => Some(false),
            Ok("1") => Some(true),
            Err(_) => None,
            Ok(other) => bail!("HEARTH_TILE_PREFETCH={other:?}: expected 0 (the tiled matmuls load each step's values just before they stage them) or 1 (a step ahead, during the sums; unset: a step ahead, or as tuned for the GPU)"),
        },
        steps: match std::env::var("HEARTH_TILE_STEPS").as_deref() {
            Err(_) => None,
            Ok("8") => Some(8),
            Ok("16") => Some(16),
            Ok(other) => bail!("HEARTH_TILE_STEPS={other:?}: expected 8 (the f32 tiled matmuls stage 8 reduction steps per iteration, the default) or 16 (in tiles of 128, where the GPU's workgroup memory holds them)"),
        },
        columns: match std::env::var("HEARTH_TILE_COLUMNS").as_deref() {
            Err(_) => None,
            Ok("128") => Some(128),
            Ok("64") => Some(64),
            Ok(other) => bail!("HEARTH_TILE_COLUMNS={other:?}: expected 128 (the f32 tiled matmuls' tiles of 128 rows are 128 columns wide, 8 × 8 outputs an invocation, the default) or 64 (8 × 4 an invocation)"),
        },
        buffers: match std::env::var("HEARTH_TILE_BUFFERS").as_deref() {
            Err(_) => None,
            Ok("1") => Some(1),
            Ok("2") => Some(2),
            Ok(other) => bail!("HEARTH_TILE_BUFFERS={other:?}: expected 1 (the f32 tiled matmuls' tiles of 128 kept once in workgroup memory, the default) or 2 (twice, one written while the other is summed, where the GPU's workgroup memory holds them)"),
        },
    };
    ctx = ctx.with_tile_choice(tiles);
    match std::env::var("HEARTH_DECODE_AHEAD").as_deref() {
        Ok("0") => ctx = ctx.with_decode_ahead(false),
        Ok("1") | Err(_) => {}
        Ok(other) => bail!("HEARTH_DECODE_AHEAD={other:?}: expected 0 (decoding reads the logits and picks each token on the host, a token at a time) or 1 (picks on the GPU, a token ahead, the default)"),
    }
    match std::env::var("HEARTH_SUBGROUPS").as_deref() {
        Ok("0") => ctx = ctx.with_subgroup_reductions(false),
        Ok("1") | Err(_) => {}
        Ok(other) => bail!("HEARTH_SUBGROUPS={other:?}: expected 0 (off) or 1 (where the adapter has them, the default)"),
    }
    tile_tuning::apply(&mut ctx)?;
    if std::env::var("HEARTH_THIN_SPLIT").as_deref() == Ok("same") {
        ctx.set_tile_choice(TileChoice { thin_split: None, ..ctx.tile_choice() });
    }
    eprintln!(
        "adapter: {} ({:?} kernels, {:?} attention, {} reductions{}{}{}{}{})",
        ctx.summary(),
        ctx.kernel_paths(),
        AttentionKernels::for_training(&ctx),
        if ctx.subgroup_reductions() { "subgroup" } else { "workgroup" },
        match (ctx.f16_matmuls(), ctx.has_cooperative_matrix()) {
            (false, _) => "",
            (true, true) => ", f16 matmuls on cooperative matrices",
            (true, false) => ", f16 matmuls: forwards and input gradients in f16 tiles",
        },
        match ctx.shader_checks().describe() {
            d if d.is_empty() => d,
            d => format!(", {d}"),
        },
        if ctx.decode_ahead() { "" } else { ", decoding picking its tokens on the host" },
        // (the split and the loads' order where they are not described with the tiles)
        match (ctx.kernel_paths(), tiles.split_workgroups, tiles.split_min_steps) {
            (KernelPaths::Gpu, _, _) => format!(", {}", tile_tuning::describe(ctx.tile_choice())),
            (_, w, s) => w.map(|w| format!(", {}", tile_tuning::split_words(w))).into_iter().chain(s.map(|s| format!(", {}", tile_tuning::split_steps_words(s)))).collect(),
        },
        match (ctx.kernel_paths(), ctx.tile_prefetch()) {
            (KernelPaths::Gpu, _) | (_, true) => "",
            (_, false) => ", the tiled matmuls' values loaded in turn",
        }
    );
    Ok(ctx)
}

/// A second context on `ctx`'s adapter with cooperative matrices, where it offers them in the
/// form matmul_coop.wgsl needs: `selftest` and `bench ops` check and time them beside the
/// default context, whose other kernels then run as they do in training. Its tiles and shader
/// checks are `ctx`'s (HEARTH_TILES, the tuned threshold of 128 × 128 tiles,
/// HEARTH_SHADER_CHECKS).
pub fn open_coop_gpu(ctx: &GpuContext) -> Result<Option<GpuContext>> {
    if !ctx.offers_cooperative_matrix().1 {
        return Ok(None);
    }
    let filter = std::env::var("HEARTH_ADAPTER").ok();
    let options = ContextOptions { cooperative_matrix: true, shader_checks: ctx.shader_checks() };
    let coop = pollster::block_on(GpuContext::new_with(filter.as_deref(), options))?.with_tile_choice(ctx.tile_choice()).with_coop_prefetch(ctx.coop_prefetch());
    Ok(coop.has_cooperative_matrix().then_some(coop))
}

/// Mesa's Vulkan device-select layer (an implicit layer on Debian and others) asks the Wayland
/// compositor which GPU is the default, and where there is none (a headless machine, a
/// container, ssh without XDG_RUNTIME_DIR) libwayland prints "error: XDG_RUNTIME_DIR is
/// invalid or not set in the environment." twice before every command. wgpu chooses among the
/// adapters itself, so the layer is turned off there, unless the user steers it
/// (MESA_VK_DEVICE_SELECT) or has said either way (NODEVICE_SELECT). Runs before any thread.
fn quiet_device_select() {
    let set = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
    if !set("XDG_RUNTIME_DIR") && !set("MESA_VK_DEVICE_SELECT") && std::env::var_os("NODEVICE_SELECT").is_none() {
        std::env::set_var("NODEVICE_SELECT", "1");
    }
}

fn main() {
    quiet_device_select();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Selftest => selftest::run(),
        Command::Info(a) => info::run(a),
        Command::Score(a) => score::run(a),
        Command::Generate(a) => generate::run_generate(a),
        Command::Chat(a) => generate::run_chat(a),
        Command::Demo(a) => demo::run(a),
        Command::Train(a) => train::run(*a),
        Command::Eval(a) => eval::run(*a),
        Command::Merge(a) => merge::run(a),
        Command::Export(a) => export::run(a),
        Command::ExportAdapter(a) => export::run_adapter(a),
        Command::Tokenize(a) => tokenize::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Web(a) => web::run(a),
        Command::Bench(cmd) => bench::run(cmd),
    };
    if let Err(e) = result {
        // The context chain down to core's error, whose message already says what its
        // source says.
        let mut parts = Vec::new();
        for cause in e.chain() {
            parts.push(cause.to_string());
            if cause.downcast_ref::<Error>().is_some() {
                break;
            }
        }
        eprintln!("error: {}", parts.join(": "));
        if let Some(advice) = advice(&e) {
            eprintln!("{advice}");
        }
        std::process::exit(1);
    }
}

/// What to do about an error, in this CLI's terms (core's messages name no flags).
fn advice(e: &anyhow::Error) -> Option<String> {
    let core = e.chain().find_map(|c| c.downcast_ref::<Error>())?;
    Some(match core {
        Error::OutOfMemory(_) => {
            "lower --batch-size or --max-seq-len, use --gradient-checkpointing on, or --method qlora".into()
        }
        Error::DeviceLost(_) => "run again (training: with --resume and the last checkpoint)".into(),
        Error::Diverged { .. } => "lower --lr, or check the data".into(),
        // (an environment variable's message says what it takes)
        Error::InvalidSetting { setting, .. } if setting.starts_with("HEARTH_") => return None,
        Error::InvalidSetting { setting, .. } => format!("change --{}", settings_args::flag(setting)),
        Error::NoAdapter(_) => {
            "install a Vulkan, Metal or DX12 driver (without a GPU: apt-get install mesa-vulkan-drivers)".into()
        }
        _ => return None,
    })
}
