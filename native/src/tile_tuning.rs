//! The tiled matmuls' tile size, measured on the user's GPU. Whether an output is computed in
//! 128 × 128 tiles (more work per workgroup, fewer workgroups) or 64 × 64 pays depends on how
//! many compute units the GPU has to fill, which no API reports: a laptop's integrated GPU
//! fills with few workgroups, an H100 wants hundreds. So the first command on a GPU times both
//! at training's shapes (f32 and Q4_1 forwards), takes the output size from which 128 × 128
//! tiles cost least in total, and keeps it in the cache; later commands read it. Only the
//! tile size changes: results differ at most by rounding (a launch of few tiles may split
//! its reduction, which sums in another order).

use anyhow::{Context, Result};
use hearth_core::gpu::{Shader, TileChoice};
use hearth_core::ops::matmul::{matmul_with, Accumulate, MatmulDims, MatmulKind, MatmulTiling, WIDE_OUTPUTS};
use hearth_core::ops::matmul_quant::{matmul_quant_with, GpuQuantWeight, QuantBlock};
use hearth_core::quant::{QuantFormat, QuantTensor};
use hearth_core::rng::Rng;
use hearth_core::GpuContext;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// (M, N, K) of the forwards timed: SmolLM2's projections over a short and a full micro-batch
/// (q/o, down, gate/up alone and stacked), and a larger model's.
const SHAPES: [(usize, usize, usize); 6] = [(512, 576, 576), (2048, 576, 576), (2048, 576, 1536), (2048, 1536, 576), (2048, 3072, 576), (4096, 4096, 1024)];
/// `--quick`: small shapes for CPU emulators (the tests).
const QUICK_SHAPES: [(usize, usize, usize); 3] = [(64, 64, 64), (128, 256, 64), (256, 256, 128)];

/// What the cache file's layout and the shapes are; a change re-tunes.
const TUNING_VERSION: u32 = 1;

/// One shape's forward in both tile sizes, ms per launch.
pub struct Timed {
    pub format: &'static str,
    pub shape: (usize, usize, usize),
    pub ms_64: f64,
    pub ms_128: f64,
}

/// The measured threshold and what it came from.
pub struct Tuning {
    /// Outputs from which 128 × 128 tiles are taken (usize::MAX: never).
    pub wide_outputs: usize,
    pub timed: Vec<Timed>,
}

impl Tuning {
    pub fn to_json(&self) -> Value {
        let timed: Vec<Value> = self
            .timed
            .iter()
            .map(|t| json!({ "format": t.format, "m": t.shape.0, "n": t.shape.1, "k": t.shape.2, "ms_64": t.ms_64, "ms_128": t.ms_128 }))
            .collect();
        json!({ "version": TUNING_VERSION, "wide_outputs": (self.wide_outputs != usize::MAX).then_some(self.wide_outputs), "timed": timed })
    }
}

/// The threshold with the least total time over `timed`: 128 × 128 tiles from each timed
/// output size in turn, or never. Ties go to the larger threshold (fewer wide launches).
pub fn best_threshold(timed: &[Timed]) -> usize {
    let outputs = |t: &Timed| t.shape.0 * t.shape.1;
    let total = |from: usize| -> f64 { timed.iter().map(|t| if outputs(t) >= from { t.ms_128 } else { t.ms_64 }).sum() };
    let mut candidates: Vec<usize> = timed.iter().map(outputs).collect();
    candidates.push(usize::MAX);
    candidates.sort_unstable();
    candidates.dedup();
    candidates.into_iter().rev().min_by(|&a, &b| total(a).total_cmp(&total(b))).expect("at least `never`")
}

/// Times the f32 and Q4_1 tiled forwards at the shapes in both tile sizes on `ctx` (its own
/// tile choice is restored after).
pub fn measure(ctx: &mut GpuContext, quick: bool) -> Result<Tuning> {
    let shapes: &[(usize, usize, usize)] = if quick { &QUICK_SHAPES } else { &SHAPES };
    let before = ctx.tile_choice();
    let mut rng = Rng::new(0);
    let mut timed = Vec::new();
    for &(m, n, k) in shapes {
        let x = ctx.upload_f32(&rng.vec_uniform(m * k, -1.0, 1.0))?;
        let y = ctx.alloc_f32(m * n)?;
        let w_values = rng.vec_uniform(n * k, -1.0, 1.0);
        let w = ctx.upload_f32(&w_values)?;
        let q = GpuQuantWeight::upload(ctx, &QuantTensor::quantize(QuantFormat::Q4_1, &w_values, n, k)?)?;
        let d = MatmulDims::new(m, n, k);
        let (mut f32_ms, mut q4_1_ms) = ([0.0; 2], [0.0; 2]);
        for (i, side) in [64, 128].into_iter().enumerate() {
            ctx.set_tile_choice(TileChoice { side: Some(side), ..before });
            let ctx = &*ctx;
            let tiling = if side == 128 { MatmulTiling::TiledWide } else { MatmulTiling::Tiled };
            f32_ms[i] = time_launch(ctx, &mut || matmul_with(ctx, MatmulKind::Forward, tiling, &y, &x, &w, d, Accumulate::OVERWRITE))?;
            q4_1_ms[i] = time_launch(ctx, &mut || matmul_quant_with(ctx, QuantBlock::Tiled, MatmulKind::Forward, &y, &x, &q, m, Accumulate::OVERWRITE, None))?;
        }
        timed.push(Timed { format: "f32", shape: (m, n, k), ms_64: f32_ms[0], ms_128: f32_ms[1] });
        timed.push(Timed { format: "q4_1", shape: (m, n, k), ms_64: q4_1_ms[0], ms_128: q4_1_ms[1] });
    }
    ctx.set_tile_choice(before);
    // (the timed buffers go back to the device, not into the command's pool and its peak)
    ctx.trim_pool();
    ctx.reset_peak_memory();
    Ok(Tuning { wide_outputs: best_threshold(&timed), timed })
}

/// ms per launch of `launch`: bench's fastest of 5 batches, each batch long enough (about
/// 5 ms, at most 50 launches) that submitting and waiting do not hide the difference.
fn time_launch(ctx: &GpuContext, launch: &mut dyn FnMut() -> hearth_core::Result<()>) -> Result<f64> {
    let mut failed = None;
    let mut run = || {
        if let Err(e) = launch() {
            failed.get_or_insert(e);
        }
    };
    let (rough, _) = crate::bench::time(ctx, 1, &mut run)?;
    let reps = ((5.0 / rough.max(1e-3)).ceil() as usize).clamp(1, 50);
    let (ms, _) = crate::bench::time(ctx, reps, &mut run)?;
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(ms),
    }
}

/// Where the tuning of `ctx`'s adapter is kept: under $XDG_CACHE_HOME (or ~/.cache)
/// /hearth/tuning/, named for the adapter and a hash of what the timings depend on (the
/// adapter, its driver, this build's kernels), so that a new driver or new kernels re-tune.
pub fn cache_path(ctx: &GpuContext) -> Result<PathBuf> {
    let s = ctx.summary();
    let mut hash = Sha256::new();
    hash.update(format!("{TUNING_VERSION}\n{}\n{}\n{}\n", s.name, s.backend, s.driver));
    for shader in Shader::ALL {
        hash.update(shader.source());
    }
    let digest: String = hash.finalize()[..8].iter().map(|b| format!("{b:02x}")).collect();
    let name: String = s.name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    let cache = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => std::env::home_dir().context("no home folder for the tile tuning's cache (set XDG_CACHE_HOME)")?.join(".cache"),
    };
    Ok(cache.join("hearth/tuning").join(format!("{name}-{digest}.json")))
}

/// The threshold in a cache file, or why it cannot be used.
pub fn read_cache(path: &Path) -> Result<usize, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("not JSON ({e})"))?;
    if v["version"].as_u64() != Some(TUNING_VERSION as u64) {
        return Err(format!("version {} where this build writes {TUNING_VERSION}", v["version"]));
    }
    match &v["wide_outputs"] {
        Value::Null => Ok(usize::MAX),
        w => w.as_u64().filter(|&w| w > 0).map(|w| w as usize).ok_or_else(|| format!("wide_outputs {w}: expected a number of outputs, or null for never")),
    }
}

pub fn write_cache(path: &Path, tuning: &Tuning) -> Result<()> {
    std::fs::create_dir_all(path.parent().expect("a folder")).with_context(|| format!("creating {}", path.parent().expect("a folder").display()))?;
    crate::export::write_atomic(path, serde_json::to_string_pretty(&tuning.to_json())?.as_bytes())
}

/// In words, for the adapter line: what decides the tile size on `ctx`.
pub fn describe(tiles: TileChoice) -> String {
    match (tiles.side, tiles.wide_outputs) {
        (Some(side), _) => format!("tiles of {side} × {side} (HEARTH_TILES)"),
        (None, Some(usize::MAX)) => "tiles of 64 × 64 whatever the output (tuned for this GPU)".to_string(),
        (None, Some(w)) => format!("128 × 128 tiles from {} outputs (tuned for this GPU)", grouped(w)),
        (None, None) => format!("128 × 128 tiles from {} outputs", grouped(WIDE_OUTPUTS)),
    }
}

/// `n` with its thousands grouped: 1,048,576.
fn grouped(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Sets the tile size on `ctx` as tuned for its adapter, tuning it first where the cache has
/// none: on the GPU kernels of a GPU (HEARTH_TUNE unset), on any adapter (HEARTH_TUNE=1), or
/// never (HEARTH_TUNE=0: the fixed threshold). HEARTH_TILES wins over all.
pub fn apply(ctx: &mut GpuContext) -> Result<()> {
    let wanted = match std::env::var("HEARTH_TUNE").as_deref() {
        Ok("0") => false,
        Ok("1") => true,
        Err(_) => ctx.kernel_paths() == hearth_core::gpu::KernelPaths::Gpu && !ctx.is_software() && !ctx.is_noop(),
        Ok(other) => anyhow::bail!("HEARTH_TUNE={other:?}: expected 0 (the fixed tile-size threshold), 1 (tuned on any adapter) or unset (tuned on GPUs)"),
    };
    if !wanted || ctx.tile_choice().side.is_some() {
        return Ok(());
    }
    // (no cache folder, say HOME unset: tuned for this command alone)
    let path = cache_path(ctx);
    let wide_outputs = match path.as_ref().map_err(|e| format!("{e:#}")).and_then(|p| read_cache(p)) {
        Ok(w) => w,
        Err(why) => {
            match &path {
                Ok(p) if p.exists() => eprintln!("tile tuning: {} cannot be used ({why}); tuning again", p.display()),
                Ok(p) => eprintln!("tuning the tiled matmuls' tile size for this GPU (once; kept in {})", p.display()),
                Err(_) => eprintln!("tuning the tiled matmuls' tile size for this GPU ({why}: not kept)"),
            }
            let start = Instant::now();
            // (a tuning that fails leaves the fixed guess: the command goes on, and says so)
            let tuning = match measure(ctx, false) {
                Ok(tuning) => tuning,
                Err(e) => {
                    eprintln!("tile tuning failed ({e:#}); the tiles stay as the fixed guess has them, {}", describe(TileChoice::default()));
                    return Ok(());
                }
            };
            eprintln!("tuned in {:.1} s: {}", start.elapsed().as_secs_f64(), describe(TileChoice { wide_outputs: Some(tuning.wide_outputs), ..Default::default() }));
            if let Err(e) = path.as_ref().map_err(|e| anyhow::anyhow!("{e:#}")).and_then(|p| write_cache(p, &tuning)) {
                eprintln!("tile tuning: not kept ({e:#}); the next command tunes again");
            }
            tuning.wide_outputs
        }
    };
    ctx.set_tile_choice(TileChoice { wide_outputs: Some(wide_outputs), ..ctx.tile_choice() });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timed(shape: (usize, usize, usize), ms_64: f64, ms_128: f64) -> Timed {
        Timed { format: "f32", shape, ms_64, ms_128 }
    }

    #[test]
    fn the_threshold_minimises_the_total() {
        // 128 × 128 tiles lose on the small output, win on the two large ones
        let t = [timed((512, 576, 576), 1.0, 1.5), timed((2048, 576, 576), 2.0, 1.8), timed((2048, 3072, 576), 8.0, 5.0)];
        assert_eq!(best_threshold(&t), 2048 * 576);
        // never, where they always lose
        let t = [timed((512, 576, 576), 1.0, 1.5), timed((2048, 3072, 576), 5.0, 6.0)];
        assert_eq!(best_threshold(&t), usize::MAX);
        // from the smallest, where they always win
        let t = [timed((512, 576, 576), 1.5, 1.0), timed((2048, 3072, 576), 6.0, 5.0)];
        assert_eq!(best_threshold(&t), 512 * 576);
        // not monotone: the total decides (128 × 128 tiles win on the small one and the large
        // one, lose 0.1 on the middle one)
        let t = [timed((512, 576, 576), 1.5, 1.0), timed((2048, 576, 576), 2.0, 2.1), timed((2048, 3072, 576), 8.0, 5.0)];
        assert_eq!(best_threshold(&t), 512 * 576);
        // a tie keeps the larger threshold
        let t = [timed((512, 576, 576), 1.0, 1.0)];
        assert_eq!(best_threshold(&t), usize::MAX);
    }

    #[test]
    fn outputs_are_grouped_by_thousands() {
        assert_eq!([grouped(1), grouped(999), grouped(1000), grouped(1048576)], ["1", "999", "1,000", "1,048,576"]);
    }

    #[test]
    fn a_cache_file_is_read_back_or_refused_with_the_reason() {
        let dir = std::env::temp_dir().join(format!("hearth-tile-tuning-{}", std::process::id()));
        let path = dir.join("gpu.json");
        let tuning = Tuning { wide_outputs: 1 << 21, timed: vec![timed((2048, 1024, 576), 2.0, 1.0)] };
        write_cache(&path, &tuning).unwrap();
        assert_eq!(read_cache(&path), Ok(1 << 21));
        write_cache(&path, &Tuning { wide_outputs: usize::MAX, timed: vec![] }).unwrap();
        assert_eq!(read_cache(&path), Ok(usize::MAX));
        for (text, why) in [("{", "not JSON"), (r#"{"version": 0, "wide_outputs": 5}"#, "version 0"), (r#"{"version": 1, "wide_outputs": "many"}"#, "wide_outputs \"many\"")] {
            std::fs::write(&path, text).unwrap();
            let err = read_cache(&path).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(read_cache(&path).is_err());
    }
}
