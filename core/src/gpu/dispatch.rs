//! Recording a kernel launch: the pipeline (created once, cached by shader, entry point and
//! variant), explicit bind group layouts (inputs read-only, then outputs; shared by every
//! kernel of the same binding shape), bind groups cached by the buffers they bind, and the
//! dispatch into the shared compute pass (see recording.rs for the parameters' ring).
//!
//! Binding convention (shaders/README.md): an entry point's storage buffers sit at
//! `@group(0)`, contiguous from its `base` binding, inputs before outputs; each WGSL file has
//! one `Params` uniform at `@group(1) @binding(0)` shared by its entry points.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use super::recording::{Stopwatch, PARAMS_BINDING};
use super::{GpuBuffer, GpuContext, Shader, ShaderChecks};
use crate::{Error, Result};

/// A tiling of a kernel: a name for the cache key and the WGSL `override` values it sets.
#[derive(Clone, Copy, Debug)]
pub struct Variant {
    pub name: &'static str,
    pub constants: &'static [(&'static str, f64)],
}

impl Variant {
    pub const DEFAULT: Variant = Variant { name: "default", constants: &[] };
}

/// One WGSL entry point and where its storage bindings start.
#[derive(Clone, Copy, Debug)]
pub struct Kernel {
    pub shader: Shader,
    pub entry: &'static str,
    pub base: u32,
    pub variant: Variant,
}

impl Kernel {
    pub const fn new(shader: Shader, entry: &'static str, base: u32) -> Self {
        Kernel { shader, entry, base, variant: Variant::DEFAULT }
    }

    pub const fn with_variant(self, variant: Variant) -> Self {
        Kernel { variant, ..self }
    }

    /// `file:entry [variant]`, as profiles and benches name it.
    pub fn name(&self) -> String {
        format!("{}:{} [{}]", self.shader.file_name().trim_end_matches(".wgsl"), self.entry, self.variant.name)
    }

    /// The override values this kernel's pipelines are made with under `checks`, and whether
    /// wgpu zeroes its workgroup memory. Flash attention's and the cooperative-matrix kernels
    /// zero theirs themselves where the checks ask for it (their override ZEROED: every
    /// invocation a share): wgpu's zeroing, one invocation storing each array whole, took
    /// RADV's compiler 3.5 s and 20 s per kernel, against 0.03 s and 0.13 s (docs/PERF.md,
    /// 2026-12-05). A browser zeroes workgroup memory whatever it is asked.
    pub fn pipeline_options(&self, checks: ShaderChecks) -> (Vec<(&'static str, f64)>, bool) {
        let mut constants = self.variant.constants.to_vec();
        if !self.shader.zeroes_own_workgroup_memory() || cfg!(target_arch = "wasm32") {
            return (constants, checks.zeroing);
        }
        constants.push(("ZEROED", if checks.zeroing { 1.0 } else { 0.0 }));
        (constants, false)
    }
}

type PipelineKey = (Shader, &'static str, &'static str, usize, usize);
/// (first binding, inputs, outputs): what a storage bind group layout depends on.
type StorageShape = (u32, usize, usize);
/// A storage bind group: its shape and each binding's (buffer, offset, size).
type GroupKey = (StorageShape, Vec<(wgpu::Buffer, u64, u64)>);

/// Bind groups kept before the cache is cleared (a training loop binds far fewer: the pool
/// hands out the same buffers every step).
const MAX_CACHED_GROUPS: usize = 16384;

#[derive(Default)]
pub(crate) struct PipelineCache {
    modules: Mutex<HashMap<Shader, wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<PipelineKey, Arc<wgpu::ComputePipeline>>>,
    /// Every kernel a pipeline was made for, in order (`bench --kernel-stats` compiles them
    /// again to read what the driver made of them).
    made: Mutex<Vec<Kernel>>,
    storage_layouts: Mutex<HashMap<StorageShape, wgpu::BindGroupLayout>>,
    groups: Mutex<HashMap<GroupKey, wgpu::BindGroup>>,
}

impl PipelineCache {
    /// Drops the cached bind groups (they keep their buffers alive).
    pub(crate) fn forget_groups(&self) {
        self.groups.lock().unwrap().clear();
    }
}

/// Workgroup counts for `n` invocations of a 1-D kernel with `wg` lanes per workgroup,
/// folded into y when x would pass the 65535 limit. Kernels recover the linear index as
/// `gid.x + gid.y * num_workgroups.x * WG`.
pub fn grid_1d(n: u64, wg: u32) -> [u32; 3] {
    let groups = n.div_ceil(wg as u64).max(1);
    if groups <= 65535 {
        [groups as u32, 1, 1]
    } else {
        let y = groups.div_ceil(65535);
        [groups.div_ceil(y) as u32, y as u32, 1]
    }
}

impl GpuContext {
    fn storage_layout(&self, shape: StorageShape) -> wgpu::BindGroupLayout {
        let (base, n_in, n_out) = shape;
        let mut layouts = self.pipelines.storage_layouts.lock().unwrap();
        layouts
            .entry(shape)
            .or_insert_with(|| {
                let entries: Vec<wgpu::BindGroupLayoutEntry> = (0..n_in + n_out)
                    .map(|i| wgpu::BindGroupLayoutEntry {
                        binding: base + i as u32,
                        visibility: wgpu::ShaderStages::COMPUTE,
                        ty: wgpu::BindingType::Buffer {
                            ty: wgpu::BufferBindingType::Storage { read_only: i < n_in },
                            has_dynamic_offset: false,
                            min_binding_size: None,
                        },
                        count: None,
                    })
                    .collect();
                self.device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some("storage"), entries: &entries })
            })
            .clone()
    }

    fn pipeline(&self, k: &Kernel, n_in: usize, n_out: usize) -> Arc<wgpu::ComputePipeline> {
        let key = (k.shader, k.entry, k.variant.name, n_in, n_out);
        if let Some(p) = self.pipelines.pipelines.lock().unwrap().get(&key) {
            return Arc::clone(p);
        }
        let module = {
            let mut modules = self.pipelines.modules.lock().unwrap();
            modules
                .entry(k.shader)
                .or_insert_with(|| {
                    let desc = wgpu::ShaderModuleDescriptor {
                        label: Some(k.shader.file_name()),
                        source: wgpu::ShaderSource::Wgsl(k.shader.source().into()),
                    };
                    // (the zeroing is the pipeline's, below)
                    let c = self.shader_checks();
                    if c.bounds && c.loops {
                        return self.device.create_shader_module(desc);
                    }
                    let checks = wgpu::ShaderRuntimeChecks { bounds_checks: c.bounds, force_loop_bounding: c.loops, ..wgpu::ShaderRuntimeChecks::checked() };
                    // SAFETY: Hearth's own kernels only (ShaderChecks): each bounds its loops
                    // by its params and guards its indexes by them, and every launcher checks
                    // the buffers' lengths against those params.
                    unsafe { self.device.create_shader_module_trusted(desc, checks) }
                })
                .clone()
        };
        let storage_layout = self.storage_layout((k.base, n_in, n_out));
        let layout = self.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(k.entry),
            bind_group_layouts: &[Some(&storage_layout), Some(&self.ring.layout)],
            immediate_size: 0,
        });
        // (every kernel writes its workgroup memory before it reads it: the zeroing is a
        // safeguard)
        let (constants, zeroing) = k.pipeline_options(self.shader_checks());
        let pipeline = Arc::new(self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(k.entry),
            layout: Some(&layout),
            module: &module,
            entry_point: Some(k.entry),
            compilation_options: wgpu::PipelineCompilationOptions { constants: &constants, zero_initialize_workgroup_memory: zeroing },
            cache: None,
        }));
        self.pipelines.pipelines.lock().unwrap().insert(key, Arc::clone(&pipeline));
        self.pipelines.made.lock().unwrap().push(*k);
        pipeline
    }

    /// The kernels this context has made pipelines for, each once (by name), in order.
    pub fn kernels_made(&self) -> Vec<Kernel> {
        let mut seen = std::collections::HashSet::new();
        self.pipelines.made.lock().unwrap().iter().filter(|k| seen.insert(k.name())).copied().collect()
    }

    /// The bind group of these buffers for this storage shape, made once.
    fn storage_group(&self, shape: StorageShape, buffers: &[&GpuBuffer]) -> wgpu::BindGroup {
        let key: GroupKey = (shape, buffers.iter().map(|b| (b.raw().clone(), b.offset(), b.binding_size())).collect());
        if let Some(g) = self.pipelines.groups.lock().unwrap().get(&key) {
            return g.clone();
        }
        let layout = self.storage_layout(shape);
        let entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: shape.0 + i as u32,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: b.raw(),
                    offset: b.offset(),
                    size: std::num::NonZeroU64::new(b.binding_size()),
                }),
            })
            .collect();
        let group = self.device.create_bind_group(&wgpu::BindGroupDescriptor { label: Some("storage"), layout: &layout, entries: &entries });
        self.counters.bind_groups.fetch_add(1, Ordering::Relaxed);
        let mut groups = self.pipelines.groups.lock().unwrap();
        if groups.len() >= MAX_CACHED_GROUPS {
            groups.clear();
        }
        groups.insert(key, group.clone());
        group
    }

    /// Records one launch of `k` into the pending encoder. Callers have checked shapes;
    /// this checks only what every launch shares (binding size limits).
    pub(crate) fn dispatch<P: bytemuck::Pod>(
        &self,
        k: &Kernel,
        inputs: &[&GpuBuffer],
        outputs: &[&GpuBuffer],
        params: &P,
        workgroups: [u32; 3],
    ) -> Result<()> {
        self.dispatch_counted(k, inputs, outputs, params, workgroups, 0.0)
    }

    /// [`GpuContext::dispatch`] of a launch that does `flops` floating-point operations
    /// (counted in profiles: the matmuls).
    pub(crate) fn dispatch_counted<P: bytemuck::Pod>(
        &self,
        k: &Kernel,
        inputs: &[&GpuBuffer],
        outputs: &[&GpuBuffer],
        params: &P,
        workgroups: [u32; 3],
        flops: f64,
    ) -> Result<()> {
        let started = Stopwatch::start();
        let max_binding = self.limits().max_storage_buffer_binding_size;
        for b in inputs.iter().chain(outputs) {
            if b.binding_size() > max_binding {
                return Err(Error::Shape(format!(
                    "{}: a buffer of {} bytes is larger than this adapter's storage binding \
                     limit of {max_binding} bytes; split the tensor",
                    k.entry,
                    b.binding_size()
                )));
            }
        }
        let max_groups = self.limits().max_compute_workgroups_per_dimension;
        if workgroups.iter().any(|&g| g > max_groups) {
            return Err(Error::Shape(format!(
                "{}: {workgroups:?} workgroups exceed the per-dimension limit {max_groups}",
                k.entry
            )));
        }
        let bytes = bytemuck::bytes_of(params);
        if bytes.len() as u64 > PARAMS_BINDING {
            return Err(Error::Shape(format!("{}: its parameters take {} bytes, more than {PARAMS_BINDING}", k.entry, bytes.len())));
        }
        let pipeline = self.pipeline(k, inputs.len(), outputs.len());
        let buffers: Vec<&GpuBuffer> = inputs.iter().chain(outputs).copied().collect();
        let storage = self.storage_group((k.base, inputs.len(), outputs.len()), &buffers);
        let (full, timed) = self.in_pass(bytes, |pass, offset| {
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &storage, &[]);
            pass.set_bind_group(1, &self.ring.group, &[offset]);
            pass.dispatch_workgroups(workgroups[0], workgroups[1], workgroups[2]);
        });
        self.counters.dispatches.fetch_add(1, Ordering::Relaxed);
        self.counters.add_host_time(started);
        if full {
            // (a submission adds its own host time)
            self.flush();
        }
        self.note_launch(k, flops, timed, workgroups)
    }

    /// Records a fill of `buf` with zeros.
    pub fn zero(&self, buf: &GpuBuffer) {
        self.record(|encoder| encoder.clear_buffer(buf.raw(), buf.offset(), Some(buf.binding_size())));
    }

    /// Records a copy of `bytes` bytes from the start of `src` to the start of `dst`.
    pub fn copy(&self, src: &GpuBuffer, dst: &GpuBuffer, bytes: u64) {
        self.record(|encoder| {
            encoder.copy_buffer_to_buffer(src.raw(), src.offset(), dst.raw(), dst.offset(), Some(bytes.next_multiple_of(4)))
        });
    }

    /// Records a copy of `bytes` bytes from byte `src_at` of `src` to byte `dst_at` of `dst`
    /// (all multiples of 4).
    pub fn copy_region(&self, src: &GpuBuffer, src_at: u64, dst: &GpuBuffer, dst_at: u64, bytes: u64) {
        self.record(|encoder| encoder.copy_buffer_to_buffer(src.raw(), src.offset() + src_at, dst.raw(), dst.offset() + dst_at, Some(bytes)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Flash attention's and the cooperative-matrix kernels zero their workgroup memory
    /// themselves where the checks ask for zeroing (ZEROED), never through wgpu's; every other
    /// kernel through wgpu's.
    #[test]
    fn the_largest_kernels_zero_their_own_workgroup_memory() {
        let variant = Variant { name: "64x64, 128 invocations", constants: &[("WG", 128.0), ("TILE", 64.0)] };
        for shader in [Shader::AttentionFlash, Shader::MatmulCoop, Shader::MatmulCoop8x8LowRank, Shader::MatmulNf4Coop, Shader::MatmulQ4_1Coop8x8] {
            let k = Kernel::new(shader, "matmul_coop", 0).with_variant(variant);
            assert_eq!(k.pipeline_options(ShaderChecks::DEFAULT), (vec![("WG", 128.0), ("TILE", 64.0), ("ZEROED", 1.0)], false), "{shader:?}");
            assert_eq!(k.pipeline_options(ShaderChecks::NONE), (vec![("WG", 128.0), ("TILE", 64.0), ("ZEROED", 0.0)], false), "{shader:?}");
        }
        for shader in [Shader::MatmulTiled, Shader::MatmulQ4_1, Shader::Attention] {
            let k = Kernel::new(shader, "k", 0).with_variant(variant);
            assert_eq!(k.pipeline_options(ShaderChecks::DEFAULT), (vec![("WG", 128.0), ("TILE", 64.0)], true), "{shader:?}");
            assert!(!k.pipeline_options(ShaderChecks::NONE).1, "{shader:?}");
        }
    }
}
