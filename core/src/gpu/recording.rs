//! The work recorded since the last submission: one command encoder, the compute pass that
//! consecutive dispatches share, and the launches' parameters, staged for one write into a
//! uniform ring. Nothing here is created per launch once the first step has run.
//!
//! Parameters: each launch's `Params` struct goes at the next aligned offset of the staged
//! bytes; the bind group of the ring is bound with that dynamic offset. At submission the
//! staged bytes are written to the ring with one `queue.write_buffer`, which the queue orders
//! after every earlier submission, so the next batch can reuse the ring from offset 0.
//! A batch is submitted after `SUBMIT_EVERY` launches at most, which the ring holds.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Bytes the ring binds per launch: the largest `Params` struct a kernel may declare
/// (attention's, with rope's frequencies: 512).
pub(crate) const PARAMS_BINDING: u64 = 512;
/// Timestamps per profiling window (two per submission).
const MAX_QUERIES: u32 = 4096;
/// Launches after which the recorded work is submitted, so that the GPU runs it while the
/// host records the rest. A training step is some 2,000 launches ending in one readback;
/// recorded whole, it left the GPU idle for all of its recording time. A submission costs
/// about as much host time as a few launches.
pub(crate) const SUBMIT_EVERY: u32 = 128;
/// The ring's size: a submission's launches, each at an offset aligned to at most 256 bytes
/// (WebGPU's largest uniform offset alignment), taking at most PARAMS_BINDING bytes from
/// there and binding PARAMS_BINDING.
const RING_BYTES: u64 = SUBMIT_EVERY as u64 * PARAMS_BINDING;
const _: () = assert!(PARAMS_BINDING >= 256);

pub(crate) struct Recording {
    pub encoder: Option<wgpu::CommandEncoder>,
    /// The pass the current run of dispatches shares; ended before any copy or fill.
    pub pass: Option<wgpu::ComputePass<'static>>,
    /// Parameters of the launches recorded so far, at their ring offsets.
    pub params: Vec<u8>,
    /// The query index of this encoder's first timestamp, when it is being timed.
    pub timed_from: Option<u32>,
    /// Launches recorded since the last submission.
    pub launches: u32,
}

pub(crate) struct UniformRing {
    pub buffer: wgpu::Buffer,
    pub layout: wgpu::BindGroupLayout,
    pub group: wgpu::BindGroup,
    align: u64,
}

impl UniformRing {
    pub fn new(device: &wgpu::Device, align: u32) -> Self {
        let buffer = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("params ring"),
            size: RING_BYTES,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("params"),
            entries: &[wgpu::BindGroupLayoutEntry {
                binding: 0,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Uniform,
                    has_dynamic_offset: true,
                    min_binding_size: None,
                },
                count: None,
            }],
        });
        let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("params ring"),
            layout: &layout,
            entries: &[wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &buffer,
                    offset: 0,
                    size: std::num::NonZeroU64::new(PARAMS_BINDING),
                }),
            }],
        });
        UniformRing { buffer, layout, group, align: align.max(16) as u64 }
    }

    /// Where the next launch's parameters go in `staged` (at most `SUBMIT_EVERY` launches
    /// since the last submission).
    pub fn place(&self, staged: &mut Vec<u8>, bytes: &[u8]) -> u32 {
        let at = (staged.len() as u64).next_multiple_of(self.align);
        assert!(at + PARAMS_BINDING <= RING_BYTES, "more than SUBMIT_EVERY launches recorded since the last submission");
        staged.resize(at as usize, 0);
        staged.extend_from_slice(bytes);
        at as u32
    }
}

/// Counters every context keeps (cheap enough to leave on).
#[derive(Default)]
pub(crate) struct Counters {
    pub dispatches: AtomicU64,
    pub submissions: AtomicU64,
    /// Nanoseconds spent recording launches and submitting them.
    pub host_ns: AtomicU64,
    /// Storage bind groups and device buffers (pooled storage, readback staging) created:
    /// a loop that reuses what it made creates none after its first step.
    pub bind_groups: AtomicU64,
    pub buffers: AtomicU64,
}

impl Counters {
    pub fn snapshot(&self) -> CounterSnapshot {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CounterSnapshot {
            dispatches: load(&self.dispatches),
            submissions: load(&self.submissions),
            host_ns: load(&self.host_ns),
            bind_groups: load(&self.bind_groups),
            buffers: load(&self.buffers),
        }
    }

    pub fn add_host_time(&self, since: Stopwatch) {
        self.host_ns.fetch_add(since.elapsed_ns(), Ordering::Relaxed);
    }
}

/// The counters at one moment (a profiling window subtracts its start from its end).
#[derive(Clone, Copy)]
pub(crate) struct CounterSnapshot {
    pub dispatches: u64,
    pub submissions: u64,
    pub host_ns: u64,
    pub bind_groups: u64,
    pub buffers: u64,
}

/// Host time natively; in the browser, where std's clock panics, it reads 0 (the benches
/// that report host time are native).
#[derive(Clone, Copy)]
pub(crate) struct Stopwatch {
    #[cfg(not(target_arch = "wasm32"))]
    start: std::time::Instant,
}

impl Stopwatch {
    pub fn start() -> Self {
        Stopwatch {
            #[cfg(not(target_arch = "wasm32"))]
            start: std::time::Instant::now(),
        }
    }

    pub fn elapsed_ns(self) -> u64 {
        #[cfg(not(target_arch = "wasm32"))]
        return self.start.elapsed().as_nanos() as u64;
        #[cfg(target_arch = "wasm32")]
        0
    }
}

/// Launches and FLOPs of one kernel (entry point and variant) in a profiling window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KernelStat {
    pub launches: u64,
    /// Multiply-adds × 2 as the launcher counted them (matmuls; 0 for other kernels).
    pub flops: f64,
    /// Wall time of its launches, each run alone (only in a profile that asked for it).
    pub ms: f64,
}

/// What [`GpuContext::profile_end`](super::GpuContext::profile_end) reports about the work
/// recorded since `profile_begin`.
#[derive(Clone, Debug, Default)]
pub struct Profile {
    pub dispatches: u64,
    pub submissions: u64,
    /// Storage bind groups and device buffers created in the window (none in a training or
    /// decode loop's later steps: the pool and the bind group cache hand back the first
    /// step's).
    pub bind_groups_created: u64,
    pub buffers_created: u64,
    /// Time spent recording and submitting, in ms. A driver whose submission waits for the
    /// one before it to finish (lavapipe's) adds that wait: there, compare wall times.
    pub host_ms: f64,
    /// GPU time of the window's submissions from timestamp queries, in ms; None where the
    /// adapter has no timestamps inside encoders (see `gpu_time_note`).
    pub gpu_ms: Option<f64>,
    pub gpu_time_note: Option<String>,
    /// By `shader:entry [variant]`, prefixed by `scope/` for launches in a
    /// [`GpuContext::profile_scope`](super::GpuContext::profile_scope). With kernel times,
    /// the launches that count FLOPs by their grid too, after [`GRID_MARK`] (`by_kernel`
    /// sums them per kernel).
    pub kernels: BTreeMap<String, KernelStat>,
    /// How each launch was timed (its `KernelStat::ms`), where the profile asked for it.
    pub kernel_times: Option<KernelTiming>,
}

/// Where a timed launch's grid (workgroups x×y×z) follows its kernel in [`Profile::kernels`].
pub const GRID_MARK: &str = " · grid ";

impl Profile {
    /// The kernels' stats summed over their grids.
    pub fn by_kernel(&self) -> BTreeMap<String, KernelStat> {
        let mut out: BTreeMap<String, KernelStat> = BTreeMap::new();
        for (name, k) in &self.kernels {
            let sum = out.entry(name.split(GRID_MARK).next().unwrap_or(name).to_string()).or_default();
            sum.launches += k.launches;
            sum.flops += k.flops;
            sum.ms += k.ms;
        }
        out
    }

    /// The timed launches that count FLOPs, by kernel and grid.
    pub fn by_grid(&self) -> BTreeMap<String, KernelStat> {
        self.kernels.iter().filter(|(name, _)| name.contains(GRID_MARK)).map(|(name, k)| (name.clone(), k.clone())).collect()
    }
}

/// How a profile with kernel times times each launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelTiming {
    /// Timestamps before and after it in the step's own compute pass (adapters with
    /// timestamps inside passes): its share of the step as it runs.
    InPass,
    /// Submitted and waited for alone (elsewhere): the step slows, and each launch adds the
    /// fixed cost of a submission (some 0.04 ms on an H200), which inflates the small ones.
    Alone,
}

impl KernelTiming {
    pub fn describe(self) -> &'static str {
        match self {
            KernelTiming::InPass => "timed in the step",
            KernelTiming::Alone => "each launch run alone",
        }
    }
}

impl Profile {
    /// FLOPs of the launches that counted them outside any scope: the model's linear layers
    /// (scoped matmuls, such as attention's products, are parts of other ops).
    pub fn matmul_flops(&self) -> f64 {
        self.kernels.iter().filter(|(name, _)| !name.contains('/')).map(|(_, k)| k.flops).sum()
    }
}

/// The state of an open profiling window.
pub(crate) struct Profiling {
    pub start: CounterSnapshot,
    pub kernel_times: Option<KernelTiming>,
    pub kernels: BTreeMap<String, KernelStat>,
    pub timer: Option<Timer>,
    /// With `KernelTiming::InPass`: the launches' timestamps.
    pub launch_timer: Option<LaunchTimer>,
    /// The op whose launches are being recorded (`GpuContext::profile_scope`).
    pub scope: Option<&'static str>,
}

/// Timestamps written at the start and the end of each submitted encoder.
pub(crate) struct Timer {
    pub queries: wgpu::QuerySet,
    pub resolved: wgpu::Buffer,
    pub next: u32,
    pub overflowed: bool,
}

impl Timer {
    pub fn new(device: &wgpu::Device) -> Self {
        Timer {
            queries: device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("step timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: MAX_QUERIES,
            }),
            resolved: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("resolved timestamps"),
                size: MAX_QUERIES as u64 * 8,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }),
            next: 0,
            overflowed: false,
        }
    }

    /// The index of a new pair of timestamps, or None when the set is full.
    pub fn take_pair(&mut self) -> Option<u32> {
        if self.next + 2 > MAX_QUERIES {
            self.overflowed = true;
            return None;
        }
        self.next += 2;
        Some(self.next - 2)
    }
}

/// Timestamps before and after each launch in its compute pass, in sets of `MAX_QUERIES`
/// made as the launches need them, and the launches' kernel names in order.
pub(crate) struct LaunchTimer {
    pub sets: Vec<(wgpu::QuerySet, wgpu::Buffer)>,
    pub names: Vec<String>,
    /// Launches given a pair so far.
    pub launches: u32,
}

/// Most timed launches per profile (`MAX_LAUNCH_SETS` sets of timestamps: some 60 training
/// steps of SmolLM2); later ones are not timed, which the profile's total then shows.
const MAX_LAUNCH_SETS: usize = 64;

impl LaunchTimer {
    pub fn new() -> Self {
        LaunchTimer { sets: Vec::new(), names: Vec::new(), launches: 0 }
    }

    /// The set and first index of the next launch's pair of timestamps, and its number; None
    /// past the most this timer holds.
    pub fn take_pair(&mut self, device: &wgpu::Device) -> Option<(&wgpu::QuerySet, u32, usize)> {
        let per_set = MAX_QUERIES / 2;
        let (set, slot) = ((self.launches / per_set) as usize, self.launches % per_set);
        if set >= MAX_LAUNCH_SETS {
            return None;
        }
        if set == self.sets.len() {
            let queries = device.create_query_set(&wgpu::QuerySetDescriptor { label: Some("launch timestamps"), ty: wgpu::QueryType::Timestamp, count: MAX_QUERIES });
            let resolved = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("resolved launch timestamps"),
                size: MAX_QUERIES as u64 * 8,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            self.sets.push((queries, resolved));
        }
        self.launches += 1;
        Some((&self.sets[set].0, 2 * slot, self.launches as usize - 1))
    }

    /// Queries written in set `i`.
    pub fn used_in(&self, i: usize) -> u32 {
        let per_set = MAX_QUERIES / 2;
        2 * self.launches.saturating_sub(i as u32 * per_set).min(per_set)
    }
}

pub(crate) type ProfileSlot = Mutex<Option<Profiling>>;
