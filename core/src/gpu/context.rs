//! [`GpuContext`]: the adapter, device and queue, created once and shared by every op.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::dispatch::PipelineCache;
use super::pool::{GpuBuffer, Pool};
use super::recording::{Counters, ProfileSlot, Recording, UniformRing};
use crate::{Error, Result};

mod buffers;
mod coop;
mod launches;
mod tiles;
pub use buffers::Arena;
pub use coop::CoopShape;
use coop::COOP_WORKGROUP_BYTES;
pub use tiles::TileChoice;

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
    /// matmul_coop.wgsl loads each stage's values a stage ahead (`with_coop_prefetch`).
    coop_prefetch: bool,
    /// ContextOptions::shader_checks.
    shader_checks: ShaderChecks,
    /// The tiled kernels' shape, where a run overrides the launchers' heuristics.
    tiles: TileChoice,
    /// Decoding picks tokens on the GPU (one sequence's a token ahead: model/gpu_picks.rs).
    decode_ahead: bool,
}

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
            coop_prefetch: false,
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

fn describe_device_error(e: &wgpu::Error) -> Error {
    match e {
        wgpu::Error::OutOfMemory { .. } => Error::OutOfMemory("an allocation or a submission failed".into()),
        other => Error::Gpu(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::ShaderChecks;

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
}
