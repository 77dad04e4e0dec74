//! The `hearth` command-line tool.

mod bench;
mod selftest;

use clap::{Parser, Subcommand};
use hearth_core::GpuContext;

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
    /// Measure speed.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// Opens the GPU named by HEARTH_ADAPTER (a substring of its name), or the default one,
/// and says which it picked.
pub fn open_gpu() -> Result<GpuContext, String> {
    let filter = std::env::var("HEARTH_ADAPTER").ok();
    let ctx = pollster::block_on(GpuContext::new(filter.as_deref())).map_err(|e| e.to_string())?;
    eprintln!("adapter: {}", ctx.summary());
    Ok(ctx)
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Selftest => selftest::run(),
        Command::Bench(cmd) => bench::run(cmd),
    };
    if let Err(msg) = result {
        eprintln!("error: {msg}");
        std::process::exit(1);
    }
}
