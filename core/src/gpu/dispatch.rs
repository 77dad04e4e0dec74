//! Recording a kernel launch: the pipeline (created once, cached by shader, entry point and
//! variant), explicit bind group layouts (inputs read-only, then outputs) and the dispatch.
//!
//! Binding convention (shaders/README.md): an entry point's storage buffers sit at
//! `@group(0)`, contiguous from its `base` binding, inputs before outputs; each WGSL file has
//! one `Params` uniform at `@group(1) @binding(0)` shared by its entry points.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use wgpu::util::DeviceExt;

use super::{GpuBuffer, GpuContext, Shader};
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
}

type PipelineKey = (Shader, &'static str, &'static str, usize, usize);

struct CachedPipeline {
    pipeline: wgpu::ComputePipeline,
    storage_layout: wgpu::BindGroupLayout,
    params_layout: wgpu::BindGroupLayout,
}

#[derive(Default)]
pub(crate) struct PipelineCache {
    modules: Mutex<HashMap<Shader, wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<PipelineKey, Arc<CachedPipeline>>>,
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
    fn pipeline(&self, k: &Kernel, n_in: usize, n_out: usize) -> Arc<CachedPipeline> {
        let key = (k.shader, k.entry, k.variant.name, n_in, n_out);
        if let Some(p) = self.pipelines.pipelines.lock().unwrap().get(&key) {
            return Arc::clone(p);
        }
        let module = {
            let mut modules = self.pipelines.modules.lock().unwrap();
            modules
                .entry(k.shader)
                .or_insert_with(|| {
                    self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(k.shader.file_name()),
                        source: wgpu::ShaderSource::Wgsl(k.shader.source().into()),
                    })
                })
                .clone()
        };
        let storage_entries: Vec<wgpu::BindGroupLayoutEntry> = (0..n_in + n_out)
            .map(|i| wgpu::BindGroupLayoutEntry {
                binding: k.base + i as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage { read_only: i < n_in },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        let storage_layout = self.device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(k.entry),
            entries: &storage_entries,
        });
        let params_layout = self.device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("params"),
            entries: &[wgpu::BindGroupLayoutEntry {
                binding: 0,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Uniform,
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            }],
        });
        let layout = self.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(k.entry),
            bind_group_layouts: &[Some(&storage_layout), Some(&params_layout)],
            immediate_size: 0,
        });
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(k.entry),
            layout: Some(&layout),
            module: &module,
            entry_point: Some(k.entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: k.variant.constants,
                ..Default::default()
            },
            cache: None,
        });
        let cached = Arc::new(CachedPipeline { pipeline, storage_layout, params_layout });
        self.pipelines.pipelines.lock().unwrap().insert(key, Arc::clone(&cached));
        cached
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
        let cached = self.pipeline(k, inputs.len(), outputs.len());
        let entries: Vec<wgpu::BindGroupEntry> = inputs
            .iter()
            .chain(outputs)
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: k.base + i as u32,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: b.raw(),
                    offset: b.offset(),
                    size: std::num::NonZeroU64::new(b.binding_size()),
                }),
            })
            .collect();
        let storage = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(k.entry),
            layout: &cached.storage_layout,
            entries: &entries,
        });
        let mut bytes = bytemuck::bytes_of(params).to_vec();
        bytes.resize(bytes.len().next_multiple_of(16).max(16), 0);
        let uniform = self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("params"),
            contents: &bytes,
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let params_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("params"),
            layout: &cached.params_layout,
            entries: &[wgpu::BindGroupEntry { binding: 0, resource: uniform.as_entire_binding() }],
        });
        self.record(|encoder| {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(k.entry),
                timestamp_writes: None,
            });
            pass.set_pipeline(&cached.pipeline);
            pass.set_bind_group(0, &storage, &[]);
            pass.set_bind_group(1, &params_group, &[]);
            pass.dispatch_workgroups(workgroups[0], workgroups[1], workgroups[2]);
        });
        Ok(())
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
