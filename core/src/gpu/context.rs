//! [`GpuContext`]: the adapter, device and queue, created once and shared by every op.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::dispatch::PipelineCache;
use super::pool::{GpuBuffer, MemoryStats, Pool};
use super::recording::{Counters, KernelStat, KernelTiming, LaunchTimer, Profile, ProfileSlot, Profiling, Recording, Stopwatch, Timer, UniformRing, GRID_MARK, SUBMIT_EVERY};
use super::Kernel;
use crate::{Error, Result};

pub struct GpuContext {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    features: wgpu::Features,
    pool: Arc<Pool>,
    pub(crate) pipelines: PipelineCache,
    /// Dispatches are recorded here and submitted together by [`GpuContext::flush`].
    recording: Mutex<Recording>,
    /// Every launch's parameters, at a dynamic offset (recording.rs).
    pub(crate) ring: UniformRing,
    pub(crate) counters: Counters,
    profiling: ProfileSlot,
    /// Mappable buffers of past readbacks, by size (readback.rs).
    pub(crate) staging: Mutex<HashMap<u64, Vec<wgpu::Buffer>>>,
    /// Small tables the kernels read, by their values ([`GpuContext::with_constant`]).
    constants: Mutex<HashMap<Vec<u32>, GpuBuffer>>,
    /// The first error the device reported outside an error scope (validation, out of
    /// memory); surfaced by the next flush or readback instead of a panic.
    device_error: Arc<Mutex<Option<Error>>>,
    /// Set when the device is lost: this context cannot be used again.
    lost: Arc<AtomicBool>,
    /// The kernel family the launchers pick (from the adapter unless overridden).
    paths: KernelPaths,
    /// The training attention kernels, where set (else the kernel family's).
    attention: Option<crate::ops::attention::AttentionKernels>,
    /// The flash kernels' dk and dv each in a launch of its own (`with_flash_kv_apart`).
    flash_kv_apart: bool,
    /// Whether the ops with workgroup reductions run their `_subgroups` variants.
    subgroup_reductions: bool,
    /// The adapter offers cooperative matrices, and the shape matmul_coop.wgsl runs on
    /// (where the adapter offers one it can).
    offers_cooperative_matrix: bool,
    coop_shape: Option<CoopShape>,
    /// Forwards and input gradients run in f16, summed in f32 (opt-in: on cooperative
    /// matrices or in f16 tiles, where the device has them).
    f16_matmuls: bool,
    /// ContextOptions::shader_checks.
    shader_checks: ShaderChecks,
    /// The tiled kernels' shape, where a run overrides the launchers' heuristics.
    tiles: TileChoice,
    /// Decoding picks tokens on the GPU (one sequence's a token ahead: model/gpu_picks.rs).
    decode_ahead: bool,
}

/// The tiled kernels' shape where a run overrides what the launchers would pick
/// (`HEARTH_TILES`, `HEARTH_SPLIT_WORKGROUPS`, `HEARTH_TILE_PREFETCH`), so that one run on a
/// GPU can compare the heuristics with their alternatives (bench/gpu.sh), or where the tile
/// size was tuned for the adapter (the CLI's tile tuning). The results are the same either way but for rounding: a
/// split reduction sums in another order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TileChoice {
    /// Output tiles of this side, 64 or 128, whatever the output's size. None: as
    /// `wide_outputs` says.
    pub side: Option<usize>,
    /// The outputs (values) from which 128 × 128 tiles are taken, smaller ones 64 × 64: as
    /// measured on this adapter (usize::MAX: never). None: ops::matmul's WIDE_OUTPUTS, a
    /// million.
    pub wide_outputs: Option<usize>,
    /// The outputs from which the cooperative-matrix kernels take 128 × 128 tiles, as measured
    /// on this adapter (usize::MAX: never). None: as `wide_outputs`.
    pub coop_wide_outputs: Option<usize>,
    /// The workgroups a launch of few tiles splits its reduction towards, not past them
    /// (ops::matmul's reduction_split; at least 2). None: 64. Training's split weight gradients keep theirs
    /// (their parts' buffers are laid out for them).
    pub split_workgroups: Option<usize>,
    /// The fewest steps of a reduction each part of a split one takes (ops::matmul's
    /// reduction_split, training's split weight gradients too; a multiple of 8 from 8 to
    /// 4096). None: 256.
    pub split_min_steps: Option<usize>,
    /// The split of the launches in thin tiles (64 × 32: LoRA's x·Aᵀ and dh, the rank wide),
    /// as (workgroups, fewest steps of a part) like the two above, where tuned apart: their
    /// workgroups are small (64 invocations), many share a multiprocessor, and a part's
    /// iterations, each a round trip to memory, are their time. None: as the others split.
    pub thin_split: Option<(usize, usize)>,
    /// Whether an f32 product over a reduction of ops::matmul's LONG_REDUCTION steps or more
    /// (the lm_head's input gradient, over the vocabulary) takes 128 × 128 tiles whatever its
    /// outputs, as measured on this adapter: its split fills the GPU in either size, so the
    /// tiles' own speed decides. False (untuned): as its outputs say.
    pub long_wide: bool,
    /// Whether the tiled kernels (f32 and quantized) load each step's values into registers
    /// while the previous step's are summed, or just before they are staged ("loaded in
    /// turn"), as measured on this adapter or forced. None: a step ahead.
    pub prefetch: Option<bool>,
    /// Reduction steps the f32 tiled kernel stages per iteration in 128 × 128 tiles: 16 (half
    /// the barriers per product, twice the workgroup memory: 16.5 KB, past WebGPU's 16 KB)
    /// where this is Some(16) and the device allows it, else 8 (as tuned on the GPU, or
    /// `HEARTH_TILE_STEPS`).
    pub steps: Option<usize>,
    /// The columns of the f32 tiled kernel's tiles of 128 rows (and the f16 tiles'): 64 where
    /// this is Some(64), each invocation summing an 8 × 4 block (half the accumulators, so
    /// more workgroups may share a multiprocessor), else 128, blocks of 8 × 8 (as tuned on the
    /// GPU, or `HEARTH_TILE_COLUMNS`).
    pub columns: Option<usize>,
    /// The tiles in workgroup memory of the f32 tiled kernel's tiles of 128 (and the f16
    /// tiles'): 2 where this is Some(2) and the device has the room (twice the workgroup
    /// memory: past WebGPU's 16 KB), one written while the other is summed, one barrier per
    /// iteration instead of two; else 1 (`HEARTH_TILE_BUFFERS`).
    pub buffers: Option<usize>,
}

/// The cooperative matrices the kernels on them (pieces/coop_gemm.wgsl) run on: products of
/// `side` × `side` × `side` (f16 into f32), by subgroups of `subgroups.0` to `subgroups.1`
/// invocations (one size on NVIDIA and lavapipe; wgpu reports a range on AMD and Metal), their
/// workgroups sized for subgroups of `sized_for` (the one size, else 32 where the range holds
/// it): a subgroup per block of the tile where they are that size. The kernels are correct on
/// subgroups of any size (wider ones take blocks in turn, the ones past the blocks compute a
/// block again).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoopShape {
    pub side: u32,
    pub subgroups: (u32, u32),
    pub sized_for: u32,
}

impl CoopShape {
    /// Blocks of the kernels' tile of outputs, a subgroup's each: (32 / side)², whatever the
    /// tile (a block of a 128 × 128 tile has 4 × 4 accumulators, of a 64 × 64 one 2 × 2).
    pub fn blocks(&self) -> u32 {
        let per_side = 32 / self.side;
        per_side * per_side
    }

    /// Invocations per workgroup.
    pub fn invocations(&self) -> u32 {
        self.blocks() * self.sized_for
    }

    /// Whether its workgroup has a variant of the kernels and the device allows it.
    fn fits(&self, limits: &wgpu::Limits) -> bool {
        // (both tiles' workgroups have as many invocations)
        self.invocations() <= limits.max_compute_invocations_per_workgroup && crate::ops::matmul::coop_variant(*self, 64).is_some()
    }
}

/// The cooperative-matrix kernels' workgroup memory in 128 × 128 tiles: two 128 × 40 tiles of
/// f16, 1,024 f32 outputs on their way out, and 128 rows' scales (pieces/row_scales.wgsl).
const COOP_WORKGROUP_BYTES: u32 = 2 * 128 * 40 * 2 + 1024 * 4 + 128 * 2 * 4;

/// What to request of the device beyond the defaults.
#[derive(Clone, Copy, Debug, Default)]
pub struct ContextOptions {
    /// Cooperative matrices, where the adapter offers what matmul_coop.wgsl needs (16 × 16 × 16
    /// or 8 × 8 × 8 products of f16 into f32, with subgroups and shader-f16). Opt-in: wgpu marks them
    /// experimental, and on Vulkan it then compiles every shader under the Vulkan memory model.
    pub cooperative_matrix: bool,
    /// Which of wgpu's safeguards the kernels are compiled with (`HEARTH_SHADER_CHECKS`).
    pub shader_checks: ShaderChecks,
}

/// wgpu's runtime safeguards in Hearth's kernels on native adapters (a browser applies its
/// own whatever these say).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShaderChecks {
    /// Indexes clamped into their arrays and buffers where the driver does not enforce that.
    pub bounds: bool,
    /// A counter ending every loop, against compilers that assume that loops end.
    pub loops: bool,
    /// Workgroup memory zeroed before each workgroup runs.
    pub zeroing: bool,
}

impl ShaderChecks {
    /// wgpu's defaults: every safeguard.
    pub const ALL: ShaderChecks = ShaderChecks { bounds: true, loops: true, zeroing: true };
    pub const NONE: ShaderChecks = ShaderChecks { bounds: false, loops: false, zeroing: false };
    /// Hearth's default: the bounds checks and the zeroing, without the loop counters. Every
    /// kernel's loops are bounded by its params, so the counters guard nothing here, and they
    /// keep compilers from unrolling and analysing the loops: wgpu's own tracker has them
    /// slowing a compute shader 100× (gfx-rs/wgpu#7698). On an H200 they cost SmolLM2's
    /// training step 1.39× (4,248 tokens/s with them, 5,909 without), while the bounds checks
    /// and the zeroing cost nothing the step showed (docs/PERF.md, 2026-12-04).
    pub const DEFAULT: ShaderChecks = ShaderChecks { bounds: true, loops: false, zeroing: true };

    /// Parses `HEARTH_SHADER_CHECKS`: `1` (every safeguard), `0` (none), or the safeguards to
    /// keep, comma-separated, of `bounds`, `loops` and `zeroing`.
    pub fn parse(value: &str) -> Result<Self> {
        match value {
            "1" | "all" => return Ok(ShaderChecks::ALL),
            "0" | "none" => return Ok(ShaderChecks::NONE),
            _ => {}
        }
        let mut checks = ShaderChecks::NONE;
        for name in value.split(',').map(str::trim) {
            match name {
                "bounds" => checks.bounds = true,
                "loops" => checks.loops = true,
                "zeroing" => checks.zeroing = true,
                other => {
                    return Err(Error::invalid_setting(
                        "HEARTH_SHADER_CHECKS",
                        format!("{other:?}: expected 1 (all of wgpu's safeguards), 0 (none), or those to keep of bounds, loops and zeroing, comma-separated"),
                    ))
                }
            }
        }
        Ok(checks)
    }

    /// Each safeguard's name, and whether these keep it.
    pub fn named(&self) -> [(&'static str, bool); 3] {
        [("bounds checks", self.bounds), ("loop counters", self.loops), ("zeroed workgroup memory", self.zeroing)]
    }

    /// How these differ from the default, for the adapter line ("" where they don't).
    pub fn describe(&self) -> String {
        let changed: Vec<(&str, bool)> = self.named().into_iter().zip(ShaderChecks::DEFAULT.named()).filter(|(now, default)| now != default).map(|(now, _)| now).collect();
        let names = |on: bool| changed.iter().filter(|(_, now)| *now == on).map(|(name, _)| *name).collect::<Vec<_>>().join(" and ");
        match (names(true), names(false)) {
            (with, without) if without.is_empty() && with.is_empty() => String::new(),
            (with, without) if without.is_empty() => format!("shaders with wgpu's {with} too"),
            (with, without) if with.is_empty() => format!("shaders without wgpu's {without}"),
            (with, without) => format!("shaders with wgpu's {with}, without its {without}"),
        }
    }
}

impl Default for ShaderChecks {
    fn default() -> Self {
        ShaderChecks::DEFAULT
    }
}

/// The kernel families: each op has a variant for software adapters and one for GPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelPaths {
    /// lavapipe: register-blocked matmuls, the large quantized blocks, attention as matmuls.
    Llvmpipe,
    /// Other CPU adapters (SwiftShader, a browser's fallback): as lavapipe, with the small
    /// quantized blocks.
    Software,
    /// Real GPUs: workgroup-tiled matmuls (f32 and quantized) and attention.
    Gpu,
}

/// What was picked, for people to read and for the launchers to choose kernel variants.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    /// The driver's name and version, as the adapter reports them (empty in browsers).
    pub driver: String,
    /// A software rasterizer (lavapipe, SwiftShader, WARP): wants different matmul tilings.
    pub is_software: bool,
    pub shader_f16: bool,
    /// Subgroup operations (native Vulkan, Metal, DX12; wgpu does not pass them through
    /// WebGPU).
    pub subgroups: bool,
    pub max_storage_binding: u64,
    pub max_buffer: u64,
    pub max_workgroup_storage: u32,
    pub max_invocations: u32,
}

impl std::fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = if self.name.is_empty() { "(unnamed adapter)" } else { &self.name };
        write!(
            f,
            "{name} [{} {}] f16={} subgroups={} storage-binding={} MiB buffer={} MiB workgroup-mem={} KiB",
            self.backend,
            self.device_type,
            if self.shader_f16 { "yes" } else { "no" },
            if self.subgroups { "yes" } else { "no" },
            self.max_storage_binding >> 20,
            self.max_buffer >> 20,
            self.max_workgroup_storage >> 10,
        )
    }
}

/// The adapter name (HEARTH_ADAPTER) that picks wgpu's noop backend: a device that runs
/// nothing, shaped like a discrete GPU (the GPU kernels, subgroups of 32, shader-f16, no
/// timestamps), so that `hearth bench` times the host's side of a step alone: recording,
/// validation, bind groups, submissions. Every result it reads back is zeros.
#[cfg(not(target_arch = "wasm32"))]
pub const NOOP_ADAPTER: &str = "noop";

#[cfg(not(target_arch = "wasm32"))]
async fn noop_adapter() -> Result<wgpu::Adapter> {
    let limits = wgpu::Limits {
        max_storage_buffer_binding_size: (1 << 31) - 4,
        max_buffer_size: 1 << 36,
        max_compute_workgroup_storage_size: 48 << 10,
        max_storage_buffers_per_shader_stage: 16,
        ..wgpu::Limits::default()
    };
    let noop = wgpu::NoopBackendOptions {
        enable: true,
        limits: Some(limits),
        features: Some(wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP),
        device_type: None,
        subgroup_min_size: Some(32),
        subgroup_max_size: Some(32),
    };
    let descriptor = wgpu::InstanceDescriptor {
        backends: wgpu::Backends::NOOP,
        backend_options: wgpu::BackendOptions { noop, ..Default::default() },
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    };
    let instance = wgpu::Instance::new(descriptor);
    instance.request_adapter(&Default::default()).await.map_err(|e| Error::NoAdapter(format!("wgpu's noop backend: {e}")))
}

impl GpuContext {
    /// Picks an adapter (the first whose name contains `name_filter`, case-insensitive, when
    /// given; otherwise the high-performance default), then requests a device with the
    /// adapter's real limits and shader-f16 when offered.
    pub async fn new(name_filter: Option<&str>) -> Result<Self> {
        Self::new_with(name_filter, ContextOptions::default()).await
    }

    /// [`GpuContext::new`], requesting what `options` asks for where the adapter has it.
    pub async fn new_with(name_filter: Option<&str>, options: ContextOptions) -> Result<Self> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
        let adapter = match name_filter {
            #[cfg(not(target_arch = "wasm32"))]
            Some(NOOP_ADAPTER) => noop_adapter().await?,
            Some(filter) => {
                let wanted = filter.to_lowercase();
                let adapters = instance.enumerate_adapters(wgpu::Backends::all()).await;
                let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
                adapters
                    .into_iter()
                    .find(|a| a.get_info().name.to_lowercase().contains(&wanted))
                    .ok_or_else(|| {
                        Error::NoAdapter(format!(
                            "no adapter name contains {filter:?}; found: {}",
                            if names.is_empty() { "none".into() } else { names.join(", ") }
                        ))
                    })?
            }
            None => instance
                .request_adapter(&wgpu::RequestAdapterOptions {
                    power_preference: wgpu::PowerPreference::HighPerformance,
                    ..Default::default()
                })
                .await
                .map_err(|e| {
                    Error::NoAdapter(format!(
                        "{e} (on Linux without a GPU install Mesa's lavapipe: \
                         apt-get install mesa-vulkan-drivers)"
                    ))
                })?,
        };
        let info = adapter.get_info();
        let limits = adapter.limits();
        // Timestamps cost nothing until a profile asks for them (`hearth bench`).
        let mut features = adapter.features()
            & (wgpu::Features::SHADER_F16
                | wgpu::Features::SUBGROUP
                | wgpu::Features::TIMESTAMP_QUERY
                | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS
                | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES);
        let offers_cooperative_matrix = adapter.features().contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX);
        let coop_shape = [16, 8]
            .into_iter()
            .find(|&side| {
                adapter.cooperative_matrix_properties().iter().any(|c| {
                    (c.m_size, c.n_size, c.k_size) == (side, side, side)
                        && c.ab_type == wgpu::CooperativeScalarType::F16
                        && c.cr_type == wgpu::CooperativeScalarType::F32
                })
            })
            .map(|side| {
                let subgroups = (info.subgroup_min_size, info.subgroup_max_size);
                CoopShape { side, subgroups, sized_for: 32.clamp(subgroups.0, subgroups.1) }
            })
            .filter(|&shape| {
                offers_cooperative_matrix
                    && features.contains(wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP)
                    && shape.fits(&limits)
                    && limits.max_compute_workgroup_storage_size >= COOP_WORKGROUP_BYTES
            });
        let experimental_features = if options.cooperative_matrix && coop_shape.is_some() {
            features |= wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
            // SAFETY: the one experimental feature requested is cooperative matrices, used
            // only by matmul_coop.wgsl in the configuration checked just above.
            unsafe { wgpu::ExperimentalFeatures::enabled() }
        } else {
            wgpu::ExperimentalFeatures::disabled()
        };
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("hearth"),
                required_features: features,
                required_limits: limits.clone(),
                experimental_features,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::NoAdapter(format!("{} refused a device: {e}", info.name)))?;
        let device_error = Arc::new(Mutex::new(None));
        let sink = Arc::clone(&device_error);
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut slot = sink.lock().unwrap();
            if slot.is_none() {
                *slot = Some(describe_device_error(&e));
            }
        }));
        let (sink, lost) = (Arc::clone(&device_error), Arc::new(AtomicBool::new(false)));
        let lost_flag = Arc::clone(&lost);
        device.set_device_lost_callback(move |reason, message| {
            // dropping the context also "loses" the device; that is no error
            if reason != wgpu::DeviceLostReason::Destroyed {
                lost_flag.store(true, Ordering::SeqCst);
                *sink.lock().unwrap() = Some(Error::DeviceLost(format!("{message} ({reason:?}); the work since the last checkpoint is gone")));
            }
        });
        let ring = UniformRing::new(&device, limits.min_uniform_buffer_offset_alignment);
        Ok(GpuContext {
            device,
            queue,
            info,
            limits,
            features,
            pool: Arc::default(),
            pipelines: PipelineCache::default(),
            recording: Mutex::new(Recording { encoder: None, pass: None, params: Vec::new(), timed_from: None, launches: 0 }),
            ring,
            counters: Counters::default(),
            profiling: Mutex::new(None),
            staging: Mutex::default(),
            constants: Mutex::default(),
            device_error,
            lost,
            paths: KernelPaths::Gpu,
            attention: None,
            flash_kv_apart: false,
            subgroup_reductions: features.contains(wgpu::Features::SUBGROUP),
            offers_cooperative_matrix,
            coop_shape,
            f16_matmuls: false,
            shader_checks: options.shader_checks,
            tiles: TileChoice::default(),
            decode_ahead: true,
        }
        .with_adapter_paths())
    }

    /// lavapipe gets its own paths: SwiftShader (Chromium's software adapter, native and in
    /// the browser) is also a CPU device, but the quantized matmuls' large blocks, which suit
    /// llvmpipe, ran SmolLM2 over 25× slower there than the small ones (docs/PERF.md).
    fn with_adapter_paths(self) -> Self {
        let paths = if !self.is_software() {
            KernelPaths::Gpu
        } else if self.is_llvmpipe() {
            KernelPaths::Llvmpipe
        } else {
            KernelPaths::Software
        };
        self.with_kernel_paths(paths)
    }

    /// This context with the launchers picking `paths` whatever the adapter: tests run the
    /// GPU kernels through whole models on a software adapter this way.
    pub fn with_kernel_paths(mut self, paths: KernelPaths) -> Self {
        self.paths = paths;
        self
    }

    /// The kernel family the launchers pick.
    pub fn kernel_paths(&self) -> KernelPaths {
        self.paths
    }

    /// Which of wgpu's safeguards the kernels are compiled with (ContextOptions).
    pub fn shader_checks(&self) -> ShaderChecks {
        self.shader_checks
    }

    /// This context with the tiled kernels' shape overridden where `tiles` says (a side of 64
    /// or 128, a split target of at least 2; others are ignored).
    pub fn with_tile_choice(mut self, tiles: TileChoice) -> Self {
        self.set_tile_choice(tiles);
        self
    }

    /// [`GpuContext::with_tile_choice`] in place (the CLI's tile tuning times both sides).
    pub fn set_tile_choice(&mut self, tiles: TileChoice) {
        self.tiles = TileChoice {
            side: tiles.side.filter(|s| [64, 128].contains(s)),
            wide_outputs: tiles.wide_outputs,
            coop_wide_outputs: tiles.coop_wide_outputs,
            split_workgroups: tiles.split_workgroups.filter(|&w| w >= 2),
            split_min_steps: tiles.split_min_steps.filter(|&s| crate::ops::matmul::valid_split_min_steps(s)),
            thin_split: tiles.thin_split.filter(|&(w, s)| w >= 2 && crate::ops::matmul::valid_split_min_steps(s)),
            long_wide: tiles.long_wide,
            prefetch: tiles.prefetch,
            steps: tiles.steps.filter(|&s| s == 8 || (s == 16 && self.limits.max_compute_workgroup_storage_size >= crate::ops::matmul::WIDE_16_STEPS_BYTES)),
            columns: tiles.columns.filter(|c| [64, 128].contains(c)),
            buffers: tiles.buffers.filter(|&b| b == 1 || (b == 2 && self.limits.max_compute_workgroup_storage_size >= crate::ops::matmul::wide_tile_bytes(tiles.steps.unwrap_or(8), 2))),
        };
    }

    /// The tiled kernels' shape where this context overrides the heuristics or was tuned.
    pub fn tile_choice(&self) -> TileChoice {
        self.tiles
    }

    /// This context with attention (training's, and a prompt's over the KV cache) on
    /// `kernels` whatever the kernel family (to compare them on one adapter:
    /// `HEARTH_ATTENTION`).
    pub fn with_attention_kernels(mut self, kernels: crate::ops::attention::AttentionKernels) -> Self {
        self.attention = Some(kernels);
        self
    }

    /// This context with the reductions on subgroup operations (where the adapter has them)
    /// or on workgroup memory only: tests run both on one adapter this way.
    pub fn with_subgroup_reductions(mut self, on: bool) -> Self {
        self.subgroup_reductions = on && self.has_subgroups();
        self
    }

    /// True when rmsnorm, cross-entropy, the gradient norm and the matrix-vector kernels
    /// (decoding on GPUs) reduce with subgroup operations.
    pub fn subgroup_reductions(&self) -> bool {
        self.subgroup_reductions
    }

    /// `shader`, or its variant on subgroup operations where this context uses them.
    pub(crate) fn reduction_shader(&self, shader: super::Shader) -> super::Shader {
        match shader.with_subgroups() {
            Some(variant) if self.subgroup_reductions => variant,
            _ => shader,
        }
    }

    pub(crate) fn attention_kernels(&self) -> Option<crate::ops::attention::AttentionKernels> {
        self.attention
    }

    /// This context with the flash kernels' keys' gradients in two launches, dv's then dk's,
    /// each recomputing the scores (some 25 % more of that kernel's work, half its
    /// accumulators), or in one (the default): to compare them on a GPU
    /// (`HEARTH_FLASH_KV=apart`), where heads of 128 may hold a multiprocessor to one
    /// workgroup in one launch.
    pub fn with_flash_kv_apart(mut self, apart: bool) -> Self {
        self.flash_kv_apart = apart;
        self
    }

    pub fn flash_kv_apart(&self) -> bool {
        self.flash_kv_apart
    }

    /// This context with greedy decoding picking each token on the GPU (the default): one
    /// sequence's run before the host has read it, a batch's read instead of their logits; or
    /// reading the logits and picking on the host (`HEARTH_DECODE_AHEAD=0`, to compare them on
    /// a GPU).
    pub fn with_decode_ahead(mut self, on: bool) -> Self {
        self.decode_ahead = on;
        self
    }

    pub fn decode_ahead(&self) -> bool {
        self.decode_ahead
    }

    /// Whether the tiled matmuls load each step's values a step ahead (`TileChoice::prefetch`).
    pub fn tile_prefetch(&self) -> bool {
        self.tiles.prefetch.unwrap_or(true)
    }

    /// Reduction steps the f32 tiled kernel stages per iteration in 128 × 128 tiles
    /// (`TileChoice::steps`): 8 or 16.
    pub fn tile_steps(&self) -> usize {
        self.tiles.steps.unwrap_or(8)
    }

    /// The columns of the f32 and f16 tiled kernels' tiles of 128 rows
    /// (`TileChoice::columns`): 128 or 64.
    pub fn tile_columns(&self) -> usize {
        self.tiles.columns.unwrap_or(128)
    }

    /// The tiles in workgroup memory of the f32 and f16 tiled kernels' tiles of 128
    /// (`TileChoice::buffers`): 1 or 2.
    pub fn tile_buffers(&self) -> usize {
        self.tiles.buffers.unwrap_or(1)
    }

    pub fn summary(&self) -> AdapterSummary {
        AdapterSummary {
            name: self.info.name.clone(),
            backend: format!("{:?}", self.info.backend),
            device_type: format!("{:?}", self.info.device_type),
            driver: format!("{} {}", self.info.driver, self.info.driver_info).trim().to_string(),
            is_software: self.is_software(),
            shader_f16: self.has_f16(),
            subgroups: self.has_subgroups(),
            max_storage_binding: self.limits.max_storage_buffer_binding_size,
            max_buffer: self.limits.max_buffer_size,
            max_workgroup_storage: self.limits.max_compute_workgroup_storage_size,
            max_invocations: self.limits.max_compute_invocations_per_workgroup,
        }
    }

    /// True for CPU-emulated adapters (lavapipe, SwiftShader, a browser's fallback adapter);
    /// not for wgpu's noop backend, which stands for a GPU (HEARTH_ADAPTER=noop) though wgpu 30
    /// reports it as a CPU whatever its options say.
    pub fn is_software(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu && !self.is_noop()
    }

    /// True for wgpu's noop backend (HEARTH_ADAPTER=noop): launches recorded, nothing run.
    pub fn is_noop(&self) -> bool {
        self.info.backend == wgpu::Backend::Noop
    }

    /// True for Mesa's lavapipe (llvmpipe): the CI's and the dev machines' adapter.
    pub fn is_llvmpipe(&self) -> bool {
        self.info.name.to_lowercase().contains("llvmpipe")
    }

    pub fn has_f16(&self) -> bool {
        self.features.contains(wgpu::Features::SHADER_F16)
    }

    /// Whether the adapter offers cooperative matrices at all, and in a form matmul_coop.wgsl
    /// runs on (16 × 16 × 16 or 8 × 8 × 8 products of f16 into f32).
    pub fn offers_cooperative_matrix(&self) -> (bool, bool) {
        (self.offers_cooperative_matrix, self.coop_shape.is_some())
    }

    /// The cooperative matrices matmul_coop.wgsl runs on here, where it runs.
    pub fn coop_shape(&self) -> Option<CoopShape> {
        self.coop_shape
    }

    /// The cooperative matrices `op` runs on, or an error naming it where this device has
    /// none (not requested, or not offered).
    pub(crate) fn coop_shape_for(&self, op: &str) -> Result<CoopShape> {
        self.coop_shape.filter(|_| self.has_cooperative_matrix()).ok_or_else(|| {
            Error::Shape(format!("{op}: this device has no cooperative matrices (ContextOptions::cooperative_matrix, on an adapter that offers them)"))
        })
    }

    /// This context with the cooperative-matrix kernels' workgroups sized for subgroups of
    /// `subgroup` invocations (tests: a subgroup taking several blocks in turn, subgroups past
    /// the blocks computing one again; the kernels are correct on any). Unchanged where no
    /// variant has that many invocations, or the device allows fewer.
    pub fn with_coop_sized_for(mut self, subgroup: u32) -> Self {
        if let Some(shape) = self.coop_shape.map(|s| CoopShape { sized_for: subgroup, ..s }).filter(|s| s.fits(&self.limits)) {
            self.coop_shape = Some(shape);
        }
        self
    }

    /// True when this device can run matmul_coop.wgsl (it was requested and granted).
    pub fn has_cooperative_matrix(&self) -> bool {
        self.features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)
    }

    /// This context with forwards and input gradients in f16, summed in f32: on cooperative
    /// matrices where the device has them (see [`ContextOptions`]), else in the tiled kernels
    /// with f16 tiles where it has shader-f16; quantized weights' likewise, decoded into f16 as
    /// they are staged. Each row of an output gradient is scaled by a power of
    /// two first (shaders/pieces/row_scales.wgsl). Weight gradients stay f32.
    /// Faster, but the inputs are rounded to f16, so it is a choice, not the default
    /// (`HEARTH_F16_MATMUL=1`). Only where the tiled kernels run: software adapters keep their
    /// f32 register kernels.
    pub fn with_f16_matmuls(mut self, on: bool) -> Self {
        self.set_f16_matmuls(on);
        self
    }

    /// [`GpuContext::with_f16_matmuls`] in place (the web app's switch).
    pub fn set_f16_matmuls(&mut self, on: bool) {
        self.f16_matmuls = on && (self.has_cooperative_matrix() || self.has_f16());
    }

    pub fn f16_matmuls(&self) -> bool {
        self.f16_matmuls
    }

    pub fn has_subgroups(&self) -> bool {
        self.features.contains(wgpu::Features::SUBGROUP)
    }

    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// The most bytes one buffer may hold and still be bound whole (the storage binding
    /// limit, or the buffer size limit where that is lower).
    pub fn max_bound_bytes(&self) -> u64 {
        self.limits.max_storage_buffer_binding_size.min(self.limits.max_buffer_size)
    }

    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// The byte offsets at which parts of one buffer are placed to be bound on their own: the
    /// adapter's storage offset alignment, at least 16 (vec4 arrays).
    pub fn storage_offset_alignment(&self) -> u64 {
        self.limits.min_storage_buffer_offset_alignment.max(16) as u64
    }

    /// A zero-initialised buffer of `len` bytes from the pool (it may hold stale data when
    /// reused: kernels write every output element).
    pub fn alloc(&self, len: u64) -> Result<GpuBuffer> {
        let max = self.limits.max_buffer_size;
        if len > max {
            return Err(Error::OutOfMemory(format!(
                "a buffer of {len} bytes exceeds this adapter's max_buffer_size of {max} bytes"
            )));
        }
        Ok(self.pool.acquire(&self.device, len, &self.counters.buffers))
    }

    /// One zeroed buffer holding `parts` (f32 counts) at offsets the adapter can bind, and a
    /// view of each part: an arena, so that ops over all of them are single launches (or
    /// one per `max_storage_buffer_binding_size` of it) and one readback.
    pub fn alloc_arena(&self, parts: &[usize]) -> Result<Arena> {
        let align = self.storage_offset_alignment();
        let mut offsets = Vec::with_capacity(parts.len());
        let mut end = 0u64;
        for &n in parts {
            offsets.push(end);
            end = (end + 4 * n as u64).next_multiple_of(align);
        }
        // An Arc keeps arenas Send natively; on the web wgpu's buffers are not Send anyway.
        #[allow(clippy::arc_with_non_send_sync)]
        let whole = Arc::new(self.alloc(end.max(4))?);
        self.zero(&whole);
        let views = parts.iter().zip(offsets).map(|(&n, at)| GpuBuffer::view(&whole, at, 4 * n as u64)).collect();
        Ok(Arena { whole, views })
    }

    /// One buffer holding `parts` back to back, and a view of each: tensors that ops read
    /// apart and together (q's, k's and v's weights, read as one by a single matmul). None
    /// where a part's length is not a multiple of the storage offset alignment (the part
    /// after it could not be bound where it starts) or the whole passes what one binding
    /// can hold.
    pub fn upload_packed(&self, parts: &[&[u8]]) -> Result<Option<Arena>> {
        let align = self.storage_offset_alignment();
        let len: u64 = parts.iter().map(|p| p.len() as u64).sum();
        if parts.iter().any(|p| !(p.len() as u64).is_multiple_of(align)) || len > self.max_bound_bytes() {
            return Ok(None);
        }
        // An Arc keeps arenas Send natively; on the web wgpu's buffers are not Send anyway.
        #[allow(clippy::arc_with_non_send_sync)]
        let whole = Arc::new(self.upload_bytes(&parts.concat())?);
        let mut at = 0;
        let views = parts
            .iter()
            .map(|p| {
                at += p.len() as u64;
                GpuBuffer::view(&whole, at - p.len() as u64, p.len() as u64)
            })
            .collect();
        Ok(Some(Arena { whole, views }))
    }

    pub fn alloc_f32(&self, n: usize) -> Result<GpuBuffer> {
        self.alloc(4 * n as u64)
    }

    /// A buffer of at least `n` f32 for work within a step whose size follows the batch (a
    /// product to accumulate, a split reduction's parts, a dropped copy): its length is
    /// `n`'s size class ([`super::layout::scratch_bytes`]), all of which launches bind, so
    /// that batches of other lengths get the same pooled buffers and cached bind groups
    /// instead of a new buffer (kept in the pool) and new bind groups per length.
    pub fn alloc_scratch_f32(&self, n: usize) -> Result<GpuBuffer> {
        let len = 4 * n as u64;
        let class = super::layout::scratch_bytes(len);
        self.alloc(if class <= self.max_bound_bytes() { class } else { len })
    }

    pub fn upload_bytes(&self, data: &[u8]) -> Result<GpuBuffer> {
        let buf = self.alloc(data.len() as u64)?;
        self.write_bytes(&buf, data);
        Ok(buf)
    }

    pub fn upload_f32(&self, data: &[f32]) -> Result<GpuBuffer> {
        self.upload_bytes(bytemuck::cast_slice(data))
    }

    pub fn upload_u32(&self, data: &[u32]) -> Result<GpuBuffer> {
        self.upload_bytes(bytemuck::cast_slice(data))
    }

    /// Runs `f` with a buffer holding `data`: a small table a kernel reads (rope's
    /// frequencies), uploaded the first time these values are asked for and kept, so that
    /// launches allocate nothing after the first.
    pub(crate) fn with_constant<R>(&self, data: &[f32], f: impl FnOnce(&GpuBuffer) -> Result<R>) -> Result<R> {
        let key: Vec<u32> = data.iter().map(|x| x.to_bits()).collect();
        let mut constants = self.constants.lock().unwrap();
        if !constants.contains_key(&key) {
            let buf = self.upload_f32(data)?;
            constants.insert(key.clone(), buf);
        }
        f(&constants[&key])
    }

    /// Writes bytes at the start of `buf`, padded with zeros to a multiple of 4.
    pub fn write_bytes(&self, buf: &GpuBuffer, data: &[u8]) {
        // Queue writes are ordered before later submissions; flush recorded dispatches first
        // so a write cannot overtake the kernels recorded before it.
        self.flush();
        if data.len().is_multiple_of(4) {
            self.queue.write_buffer(buf.raw(), buf.offset(), data);
        } else {
            let mut padded = data.to_vec();
            padded.resize(data.len().next_multiple_of(4), 0);
            self.queue.write_buffer(buf.raw(), buf.offset(), &padded);
        }
    }

    /// Writes `len` bytes (a multiple of 4) at the start of `buf` in pieces: `fill` copies
    /// each through `put(offset, bytes)` straight into the upload's staging memory, so that
    /// what it gathers is copied once on the host.
    pub fn write_pieces(&self, buf: &GpuBuffer, len: usize, fill: impl FnOnce(&mut dyn FnMut(usize, &[u8]))) {
        let Some(size) = wgpu::BufferSize::new(len as u64) else { return };
        self.flush();
        let Some(mut view) = self.queue.write_buffer_with(buf.raw(), buf.offset(), size) else {
            // wgpu has reported the invalid write (out of the buffer's bounds) to the device's
            // error handler, as write_buffer would
            return;
        };
        fill(&mut |at, bytes| view.slice(at..at + bytes.len()).copy_from_slice(bytes));
    }

    pub fn write_f32(&self, buf: &GpuBuffer, data: &[f32]) {
        self.write_bytes(buf, bytemuck::cast_slice(data));
    }

    pub fn memory(&self) -> MemoryStats {
        self.pool.stats()
    }

    pub fn reset_peak_memory(&self) {
        self.pool.reset_peak();
    }

    /// Returns unused pooled buffers to the device.
    pub fn trim_pool(&self) {
        self.pipelines.forget_groups();
        self.staging.lock().unwrap().clear();
        self.pool.trim();
    }

    /// Runs `f` on the pending encoder (the shared compute pass ended first), creating it if
    /// needed; work recorded there is submitted by the next [`GpuContext::flush`].
    pub(crate) fn record<R>(&self, f: impl FnOnce(&mut wgpu::CommandEncoder) -> R) -> R {
        let mut rec = self.recording.lock().unwrap();
        rec.pass = None;
        f(self.encoder(&mut rec))
    }

    /// Runs `f` in the shared compute pass with the ring offset of `params`: whether the
    /// recording now holds `SUBMIT_EVERY` launches and should be submitted, and in a profile
    /// timed in passes, the launch's number among those timed (timestamps on either side).
    pub(crate) fn in_pass(&self, params: &[u8], f: impl FnOnce(&mut wgpu::ComputePass<'static>, u32)) -> (bool, Option<usize>) {
        let mut rec = self.recording.lock().unwrap();
        let offset = self.ring.place(&mut rec.params, params);
        if rec.pass.is_none() {
            let pass = self.encoder(&mut rec).begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: None });
            rec.pass = Some(pass.forget_lifetime());
        }
        let pass = rec.pass.as_mut().expect("pass just opened");
        let mut profiling = self.profiling.lock().unwrap();
        let pair = profiling.as_mut().and_then(|p| p.launch_timer.as_mut()).and_then(|t| t.take_pair(&self.device));
        if let Some((queries, first, _)) = pair {
            pass.write_timestamp(queries, first);
        }
        f(pass, offset);
        if let Some((queries, first, _)) = pair {
            pass.write_timestamp(queries, first + 1);
        }
        let timed = pair.map(|(_, _, launch)| launch);
        drop(profiling);
        rec.launches += 1;
        (rec.launches >= SUBMIT_EVERY, timed)
    }

    fn encoder<'r>(&self, rec: &'r mut Recording) -> &'r mut wgpu::CommandEncoder {
        if rec.encoder.is_none() {
            let mut encoder = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
            if let Some(timer) = self.profiling.lock().unwrap().as_mut().and_then(|p| p.timer.as_mut()) {
                rec.timed_from = timer.take_pair();
                if let Some(i) = rec.timed_from {
                    encoder.write_timestamp(&timer.queries, i);
                }
            }
            rec.encoder = Some(encoder);
        }
        rec.encoder.as_mut().expect("encoder just made")
    }

    /// Submits every dispatch recorded so far; the submission's index, where there was any.
    pub fn flush(&self) -> Option<wgpu::SubmissionIndex> {
        let mut rec = self.recording.lock().unwrap();
        self.submit(&mut rec)
    }

    fn submit(&self, rec: &mut Recording) -> Option<wgpu::SubmissionIndex> {
        let started = Stopwatch::start();
        rec.pass = None;
        rec.launches = 0;
        let mut encoder = rec.encoder.take()?;
        if let Some(i) = rec.timed_from.take() {
            if let Some(timer) = self.profiling.lock().unwrap().as_ref().and_then(|p| p.timer.as_ref()) {
                encoder.write_timestamp(&timer.queries, i + 1);
            }
        }
        if !rec.params.is_empty() {
            self.queue.write_buffer(&self.ring.buffer, 0, &rec.params);
            rec.params.clear();
        }
        let submission = self.queue.submit([encoder.finish()]);
        self.counters.submissions.fetch_add(1, Ordering::Relaxed);
        self.counters.add_host_time(started);
        Some(submission)
    }

    /// Counts a launch of `k`, just recorded (`timed`: its number among those timed in
    /// passes), in the open profile, if any; in a profile that times launches alone, submits
    /// it and waits for it first.
    pub(crate) fn note_launch(&self, k: &Kernel, flops: f64, timed: Option<usize>, grid: [u32; 3]) -> Result<()> {
        // one lock per launch outside a profile
        let alone = match self.profiling.lock().unwrap().as_ref() {
            None => return Ok(()),
            Some(p) => p.kernel_times == Some(KernelTiming::Alone),
        };
        let mut ms = 0.0;
        if alone {
            let start = Stopwatch::start();
            let submission = self.flush();
            self.wait_native(submission)?;
            ms = start.elapsed_ns() as f64 / 1e6;
        }
        if let Some(p) = self.profiling.lock().unwrap().as_mut() {
            let scope = p.scope.map_or(String::new(), |s| format!("{s}/"));
            let mut name = format!("{scope}{}", k.name());
            // timed, the launches that count their FLOPs (matmuls, attention) apart by their
            // grid, which tells the shapes apart (GRID_MARK: a table by kernel drops it)
            if p.kernel_times.is_some() && flops > 0.0 {
                name.push_str(&format!("{GRID_MARK}{}×{}×{}", grid[0], grid[1], grid[2]));
            }
            if let (Some(i), Some(t)) = (timed, p.launch_timer.as_mut()) {
                t.names.resize(t.names.len().max(i + 1), String::new());
                t.names[i].clone_from(&name);
            }
            let stat = p.kernels.entry(name).or_insert_with(KernelStat::default);
            stat.launches += 1;
            stat.flops += flops;
            stat.ms += ms;
        }
        Ok(())
    }

    /// Whether GPU time can be measured here (timestamps inside command encoders).
    pub fn has_gpu_timer(&self) -> bool {
        self.features.contains(wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS)
    }

    /// Opens a profiling window: launches, FLOPs, host and GPU time from here to
    /// [`GpuContext::profile_end`].
    pub fn profile_begin(&self) {
        self.profile_begin_with(false);
    }

    /// [`GpuContext::profile_begin`]; with `kernel_times`, each launch is timed: by
    /// timestamps on either side of it in the step where the adapter has them inside passes,
    /// else submitted and waited for alone (natively only: the browser cannot wait).
    pub fn profile_begin_with(&self, kernel_times: bool) {
        self.flush();
        let start = self.counters.snapshot();
        let timer = self.has_gpu_timer().then(|| Timer::new(&self.device));
        let in_pass = self.features.contains(wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES);
        let kernel_times = kernel_times.then_some(if in_pass { KernelTiming::InPass } else { KernelTiming::Alone });
        let launch_timer = (kernel_times == Some(KernelTiming::InPass)).then(LaunchTimer::new);
        *self.profiling.lock().unwrap() = Some(Profiling { start, kernel_times, kernels: Default::default(), timer, launch_timer, scope: None });
    }

    /// Runs `f`, listing its launches in an open profile as parts of the op `scope` (their
    /// FLOPs then do not count as the model's matmuls).
    pub(crate) fn profile_scope<R>(&self, scope: &'static str, f: impl FnOnce() -> R) -> R {
        let set = |s| {
            if let Some(p) = self.profiling.lock().unwrap().as_mut() {
                p.scope = s;
            }
        };
        set(Some(scope));
        let r = f();
        set(None);
        r
    }

    /// Waits for the window's work and reports it.
    pub async fn profile_end(&self) -> Result<Profile> {
        self.finish().await?;
        let p = self.profiling.lock().unwrap().take().ok_or_else(|| Error::Gpu("profile_end without profile_begin".into()))?;
        let (now, then) = (self.counters.snapshot(), p.start);
        let mut profile = Profile {
            dispatches: now.dispatches - then.dispatches,
            submissions: now.submissions - then.submissions,
            bind_groups_created: now.bind_groups - then.bind_groups,
            buffers_created: now.buffers - then.buffers,
            host_ms: (now.host_ns - then.host_ns) as f64 / 1e6,
            gpu_ms: None,
            gpu_time_note: None,
            kernels: p.kernels,
            kernel_times: p.kernel_times,
        };
        if let Some(t) = &p.launch_timer {
            self.add_launch_times(t, &mut profile.kernels).await?;
        }
        match p.timer {
            None => profile.gpu_time_note = Some("this adapter offers no timestamp queries inside command encoders".into()),
            Some(t) if t.overflowed => profile.gpu_time_note = Some("more submissions than the timestamp set holds".into()),
            Some(t) => {
                if t.next > 0 {
                    self.record(|e| e.resolve_query_set(&t.queries, 0..t.next, &t.resolved, 0));
                    let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&self.read_raw(&t.resolved, 0, t.next as u64 * 8).await?);
                    let period = self.queue.get_timestamp_period() as f64;
                    let spans: Vec<(u64, u64)> = ticks.chunks(2).map(|pair| (pair[0], pair[1])).collect();
                    profile.gpu_ms = Some(busy_ticks(spans) as f64 * period / 1e6);
                }
            }
        }
        Ok(profile)
    }

    /// Adds each timed launch's time between its timestamps to its kernel's.
    async fn add_launch_times(&self, t: &LaunchTimer, kernels: &mut BTreeMap<String, KernelStat>) -> Result<()> {
        let period = self.queue.get_timestamp_period() as f64;
        let mut names = t.names.iter();
        for (i, (queries, resolved)) in t.sets.iter().enumerate() {
            let used = t.used_in(i);
            self.record(|e| e.resolve_query_set(queries, 0..used, resolved, 0));
            let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&self.read_raw(resolved, 0, used as u64 * 8).await?);
            for (pair, name) in ticks.chunks(2).zip(&mut names) {
                if let Some(stat) = kernels.get_mut(name) {
                    stat.ms += pair[1].saturating_sub(pair[0]) as f64 * period / 1e6;
                }
            }
        }
        Ok(())
    }

    /// Whether the device was lost (a new context is needed).
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// The first error the device reported since the last call, if any.
    pub fn take_device_error(&self) -> Result<()> {
        match self.device_error.lock().unwrap().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Ticks covered by the submissions' (start, end) timestamps, each counted once: a
/// submission's start may be stamped while the one before it still runs.
fn busy_ticks(mut spans: Vec<(u64, u64)>) -> u64 {
    spans.sort_unstable();
    let (mut busy, mut reached) = (0, 0);
    for (start, end) in spans {
        let start = start.max(reached);
        if end > start {
            busy += end - start;
            reached = end;
        }
    }
    busy
}

fn describe_device_error(e: &wgpu::Error) -> Error {
    match e {
        wgpu::Error::OutOfMemory { .. } => Error::OutOfMemory("an allocation or a submission failed".into()),
        other => Error::Gpu(other.to_string()),
    }
}

/// Tensors in one buffer (see [`GpuContext::alloc_arena`]).
pub struct Arena {
    /// The whole buffer, gaps between the parts included (they stay zero; packed: none).
    pub whole: Arc<GpuBuffer>,
    /// Each part as its own buffer (its `offset()` is where it starts in `whole`).
    pub views: Vec<GpuBuffer>,
}

impl Arena {
    /// The whole buffer as a buffer of its own.
    pub fn all(&self) -> GpuBuffer {
        GpuBuffer::view(&self.whole, 0, self.whole.len_bytes())
    }

    /// Another view of part `i` (the arena keeps its own).
    pub fn view(&self, i: usize) -> GpuBuffer {
        GpuBuffer::view(&self.whole, self.views[i].offset(), self.views[i].len_bytes())
    }

    /// The parts' values from one readback of the whole buffer.
    pub async fn read_parts(&self, ctx: &GpuContext) -> Result<Vec<Vec<f32>>> {
        let all = ctx.read_f32(&self.whole).await?;
        Ok(self.views.iter().map(|v| all[(v.offset() / 4) as usize..][..v.len_words()].to_vec()).collect())
    }

    /// Bytes `start..start + len` of part `i` as a buffer of their own (a fused layer's rows
    /// of B). A bound buffer must start at a multiple of `align` (the adapter's storage offset
    /// alignment): `what` names the part in the error when it does not.
    pub fn sub_view(&self, i: usize, start: u64, len: u64, align: u64, what: &str) -> Result<GpuBuffer> {
        let at = self.views[i].offset() - self.whole.offset() + start;
        crate::error::ensure(at.is_multiple_of(align), || {
            format!("{what} starts at byte {at} of its buffer, which the GPU cannot bind (it needs a multiple of {align}): choose a LoRA rank that is a multiple of 64")
        })?;
        Ok(GpuBuffer::view(&self.whole, at, len))
    }

    /// Views of the whole buffer, each at most `max_bytes` long, that cover it: the whole
    /// buffer, unless it passes the adapter's storage binding limit.
    pub fn chunks(&self, max_bytes: u64, align: u64) -> Vec<GpuBuffer> {
        let step = (max_bytes / align * align).max(align);
        let len = self.whole.len_bytes();
        (0..len.div_ceil(step)).map(|i| GpuBuffer::view(&self.whole, i * step, step.min(len - i * step))).collect()
    }
}


#[cfg(test)]
mod tests {
    use super::{busy_ticks, ShaderChecks};

    #[test]
    fn shader_checks_parse_and_say_how_they_differ_from_the_default() {
        assert_eq!(ShaderChecks::parse("1").unwrap(), ShaderChecks::ALL);
        assert_eq!(ShaderChecks::parse("0").unwrap(), ShaderChecks::NONE);
        assert_eq!(ShaderChecks::parse("bounds, zeroing").unwrap(), ShaderChecks::DEFAULT);
        assert_eq!(ShaderChecks::parse("loops").unwrap(), ShaderChecks { bounds: false, loops: true, zeroing: false });
        let err = ShaderChecks::parse("bounds,loop").unwrap_err().to_string();
        assert!(err.contains("\"loop\"") && err.contains("bounds, loops and zeroing"), "{err}");
        assert_eq!(ShaderChecks::DEFAULT.describe(), "");
        assert_eq!(ShaderChecks::default(), ShaderChecks::DEFAULT);
        assert_eq!(ShaderChecks::ALL.describe(), "shaders with wgpu's loop counters too");
        assert_eq!(ShaderChecks::NONE.describe(), "shaders without wgpu's bounds checks and zeroed workgroup memory");
        assert_eq!(ShaderChecks::parse("loops,zeroing").unwrap().describe(), "shaders with wgpu's loop counters, without its bounds checks");
    }

    #[test]
    fn busy_time_counts_overlapping_submissions_once() {
        assert_eq!(busy_ticks(vec![]), 0);
        // back to back, overlapping, contained, then after a gap, out of order
        assert_eq!(busy_ticks(vec![(0, 10), (10, 20), (15, 30), (16, 18), (50, 60)]), 40);
        assert_eq!(busy_ticks(vec![(50, 60), (0, 10)]), 20);
        // a reversed pair (a clock that wrapped) counts nothing
        assert_eq!(busy_ticks(vec![(5, 3), (0, 1)]), 1);
    }
}
