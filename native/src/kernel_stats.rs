//! `bench --kernel-stats`: what the GPU's own compiler made of each kernel a bench ran (its
//! registers, spills, instructions: whatever the driver reports), through Vulkan's
//! VK_KHR_pipeline_executable_properties. A timing says how fast a kernel ran, not why; a
//! kernel that holds too many registers to keep two workgroups on a compute unit, or spills
//! them to memory, shows here.
//!
//! wgpu does not ask drivers for these statistics (a pipeline must be created with
//! VK_PIPELINE_CREATE_CAPTURE_STATISTICS_BIT_KHR), so each kernel is compiled again here: the
//! same composed WGSL and override values, through naga's SPIR-V writer with the options
//! wgpu gives it (the context's shader checks included), on a Vulkan device of our own for
//! the same GPU. One difference remains: wgpu may enable the driver's robust buffer access,
//! which this device does not.

use std::collections::HashMap;
use std::ffi::CStr;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _, Result};
use ash::vk;
use hearth_core::gpu::{Kernel, Shader, ShaderChecks};
use hearth_core::GpuContext;
use serde_json::{json, Map, Value};

/// The benches' options for it (`bench ops`, `bench train`).
#[derive(clap::Args)]
pub struct KernelStatsArgs {
    /// Also list what the GPU's compiler made of each kernel the bench ran (registers,
    /// spills, instructions, as the driver reports them: Vulkan drivers that offer
    /// VK_KHR_pipeline_executable_properties).
    #[arg(long)]
    pub kernel_stats: bool,
    /// With --kernel-stats, write each kernel's SPIR-V (as the driver gets it) and the
    /// driver's internal representations of it (its IR, its machine code, where the driver
    /// gives them as text) into this folder.
    #[arg(long, value_name = "DIR", requires = "kernel_stats")]
    pub kernel_ir: Option<PathBuf>,
}

impl KernelStatsArgs {
    /// The statistics of `kernels`, compiled again for `ctx`'s GPU, where asked for.
    pub fn collect(&self, ctx: &GpuContext, kernels: &[Kernel]) -> Result<Option<Value>> {
        if !self.kernel_stats {
            return Ok(None);
        }
        if let Some(dir) = &self.kernel_ir {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        Ok(Some(kernel_stats(ctx, kernels, self.kernel_ir.as_deref())))
    }
}

const EXTENSION: &CStr = c"VK_KHR_pipeline_executable_properties";
const COOP_EXTENSION: &CStr = c"VK_KHR_cooperative_matrix";

/// `kernels` (made by `ctx`, or by a context on its adapter) compiled again for their
/// statistics: a JSON object with `device` and `kernels` (each kernel's executables and their
/// statistics, or its error), or `note` saying why there are none (not Vulkan, no such
/// extension). Where `ir_dir` is given, each kernel's SPIR-V and the driver's internal
/// representations that are text go there, a file each.
pub fn kernel_stats(ctx: &GpuContext, kernels: &[Kernel], ir_dir: Option<&Path>) -> Value {
    let summary = ctx.summary();
    if summary.backend != "Vulkan" {
        return json!({ "note": format!("compiler statistics come from Vulkan (VK_KHR_pipeline_executable_properties); this adapter runs on {}", summary.backend) });
    }
    match Compiler::open(&summary.name, ctx.shader_checks()) {
        Ok(compiler) => {
            let kernels: Vec<Value> = kernels.iter().map(|k| compiler.kernel_json(k, ir_dir)).collect();
            let mut out = json!({ "device": summary.name, "kernels": kernels });
            if compiler.executables.is_none() {
                out["note"] = json!(format!("the driver of {} does not offer VK_KHR_pipeline_executable_properties: each kernel was compiled again, without statistics", summary.name));
            }
            out
        }
        Err(e) => json!({ "note": format!("{e:#}") }),
    }
}

/// The table `--kernel-stats` prints: a line per kernel, its statistics in the driver's words.
pub fn print_kernel_stats(stats: &Value) {
    println!("compiled kernels (the driver's statistics, VK_KHR_pipeline_executable_properties):");
    if let Some(note) = stats["note"].as_str() {
        println!("  {note}");
    }
    for k in stats["kernels"].as_array().into_iter().flatten() {
        let name = k["kernel"].as_str().unwrap_or("");
        if let Some(err) = k["error"].as_str() {
            println!("  {name:<60} not compiled here: {err}");
            continue;
        }
        let compiled = format!(
            "{} invocations, {:.1} KB of workgroup memory, compiled in {:.0} ms",
            k["invocations"],
            k["workgroup_bytes"].as_f64().unwrap_or(0.0) / 1024.0,
            k["compile_ms"].as_f64().unwrap_or(0.0)
        );
        let executables = k["executables"].as_array().map_or(&[][..], |e| e.as_slice());
        if executables.is_empty() {
            println!("  {name:<60} {compiled}");
        }
        for e in executables {
            let values: Vec<String> = e["statistics"].as_object().into_iter().flatten().map(|(s, v)| format!("{s} {v}")).collect();
            println!("  {name:<60} {compiled}; {}", values.join(", "));
        }
    }
}

/// Our own Vulkan device for the GPU, with statistics on.
struct Compiler {
    _entry: ash::Entry,
    instance: ash::Instance,
    device: ash::Device,
    /// The extension's calls; None where the driver does not offer it (each kernel is then
    /// compiled without statistics: the path up to them checked where no driver gives them).
    executables: Option<ash::khr::pipeline_executable_properties::Device>,
    options: naga::back::spv::Options<'static>,
    checks: ShaderChecks,
}

impl Compiler {
    fn open(name: &str, checks: ShaderChecks) -> Result<Compiler> {
        // SAFETY: loads the system's Vulkan loader, as wgpu did for this context
        let entry = unsafe { ash::Entry::load() }.context("loading the Vulkan loader")?;
        let loader_api = unsafe { entry.try_enumerate_instance_version() }?.unwrap_or(vk::API_VERSION_1_0);
        if loader_api < vk::API_VERSION_1_1 {
            bail!("the Vulkan loader offers Vulkan 1.0; the statistics need 1.1");
        }
        let instance_api = loader_api.min(vk::API_VERSION_1_3);
        let app = vk::ApplicationInfo::default().application_name(c"hearth kernel statistics").api_version(instance_api);
        let instance = unsafe { entry.create_instance(&vk::InstanceCreateInfo::default().application_info(&app), None) }.context("creating a Vulkan instance")?;
        match Self::with_instance(entry, instance, name, checks, instance_api) {
            Ok(c) => Ok(c),
            Err((instance, e)) => {
                unsafe { instance.destroy_instance(None) };
                Err(e)
            }
        }
    }

    #[allow(clippy::result_large_err)]
    fn with_instance(entry: ash::Entry, instance: ash::Instance, name: &str, checks: ShaderChecks, instance_api: u32) -> Result<Compiler, (ash::Instance, anyhow::Error)> {
        let found = (|| -> Result<(vk::PhysicalDevice, u32, bool, bool)> {
            for pd in unsafe { instance.enumerate_physical_devices() }? {
                let props = unsafe { instance.get_physical_device_properties(pd) };
                if props.device_name_as_c_str().ok().and_then(|n| n.to_str().ok()) != Some(name) {
                    continue;
                }
                let extensions = unsafe { instance.enumerate_device_extension_properties(pd) }?;
                let has = |want: &CStr| extensions.iter().any(|e| e.extension_name_as_c_str() == Ok(want));
                return Ok((pd, props.api_version.min(instance_api), has(EXTENSION), has(COOP_EXTENSION)));
            }
            bail!("no Vulkan device named {name:?} (the adapter wgpu chose)")
        })();
        let (pd, api, stats, coop) = match found {
            Ok(f) => f,
            Err(e) => return Err((instance, e)),
        };
        let device = match Self::device(&instance, pd, api, stats, coop) {
            Ok(d) => d,
            Err(e) => return Err((instance, e)),
        };
        let executables = stats.then(|| ash::khr::pipeline_executable_properties::Device::new(&instance, &device));
        let policy = if checks.bounds { naga::proc::BoundsCheckPolicy::Restrict } else { naga::proc::BoundsCheckPolicy::Unchecked };
        let options = naga::back::spv::Options {
            // the newest SPIR-V the device takes, as wgpu chooses it
            lang_version: if api >= vk::API_VERSION_1_3 {
                (1, 6)
            } else if api >= vk::API_VERSION_1_2 {
                (1, 5)
            } else {
                (1, 3)
            },
            flags: naga::back::spv::WriterFlags::empty(),
            // (wgpu maps each binding; here WGSL's group and binding are the set and binding)
            fake_missing_bindings: true,
            bounds_check_policies: naga::proc::BoundsCheckPolicies { index: policy, buffer: policy, image_load: policy, binding_array: naga::proc::BoundsCheckPolicy::Unchecked },
            // (each kernel's zeroing as its pipelines': spirv)
            force_loop_bounding: checks.loops,
            ..Default::default()
        };
        Ok(Compiler { _entry: entry, instance, device, executables, options, checks })
    }

    /// A device with the statistics (where the driver offers them) and every feature the
    /// kernels may use (f16, subgroups, cooperative matrices) that the GPU has.
    fn device(instance: &ash::Instance, pd: vk::PhysicalDevice, api: u32, stats: bool, coop: bool) -> Result<ash::Device> {
        let family = unsafe { instance.get_physical_device_queue_family_properties(pd) }
            .iter()
            .position(|q| q.queue_flags.contains(vk::QueueFlags::COMPUTE))
            .ok_or_else(|| anyhow!("no compute queue"))? as u32;
        let mut stats_features = vk::PhysicalDevicePipelineExecutablePropertiesFeaturesKHR::default();
        let mut v11 = vk::PhysicalDeviceVulkan11Features::default();
        let mut v12 = vk::PhysicalDeviceVulkan12Features::default();
        let mut v13 = vk::PhysicalDeviceVulkan13Features::default();
        let mut coop_features = vk::PhysicalDeviceCooperativeMatrixFeaturesKHR::default();
        let mut features = vk::PhysicalDeviceFeatures2::default();
        let mut names = Vec::new();
        if stats {
            features = features.push_next(&mut stats_features);
            names.push(EXTENSION.as_ptr());
        }
        if api >= vk::API_VERSION_1_2 {
            features = features.push_next(&mut v11).push_next(&mut v12);
        }
        if api >= vk::API_VERSION_1_3 {
            features = features.push_next(&mut v13);
        }
        if coop {
            features = features.push_next(&mut coop_features);
            names.push(COOP_EXTENSION.as_ptr());
        }
        // every feature it has, enabled
        unsafe { instance.get_physical_device_features2(pd, &mut features) };
        let priorities = [1.0];
        let queues = [vk::DeviceQueueCreateInfo::default().queue_family_index(family).queue_priorities(&priorities)];
        let info = vk::DeviceCreateInfo::default().queue_create_infos(&queues).enabled_extension_names(&names).push_next(&mut features);
        unsafe { instance.create_device(pd, &info, None) }.context("creating a Vulkan device with pipeline statistics")
    }

    /// One kernel's executables and their statistics, or why it could not be compiled here.
    fn kernel_json(&self, k: &Kernel, ir_dir: Option<&Path>) -> Value {
        let name = k.name();
        match self.compile(k, ir_dir) {
            // (the driver's compile of the pipeline: what a first step waits for per kernel,
            // where no cache of the driver's shortens it)
            Ok((executables, ms, size)) => json!({
                "kernel": name, "compiled": true, "compile_ms": ms, "invocations": size.invocations, "workgroup_bytes": size.workgroup_bytes, "executables": executables,
            }),
            Err(e) => json!({ "kernel": name, "error": format!("{e:#}") }),
        }
    }

    fn compile(&self, k: &Kernel, ir_dir: Option<&Path>) -> Result<(Vec<Value>, f64, WorkgroupSize)> {
        let (module, info) = parsed(k.shader)?;
        let (spirv, size) = spirv(k, &module, &info, &self.options, self.checks)?;
        if let Some(dir) = ir_dir {
            // (the driver's input, for spirv-dis: the same on every Vulkan device)
            let file = dir.join(format!("{}.spv", slug(&k.name())));
            let bytes: Vec<u8> = spirv.iter().flat_map(|w| w.to_le_bytes()).collect();
            std::fs::write(&file, bytes).with_context(|| format!("writing {}", file.display()))?;
        }
        let sets = bindings(k.shader, &module)?;
        let d = &self.device;
        let shader = unsafe { d.create_shader_module(&vk::ShaderModuleCreateInfo::default().code(&spirv), None) }.context("vkCreateShaderModule")?;
        let result = self.compile_module(k, shader, &sets, ir_dir);
        unsafe { d.destroy_shader_module(shader, None) };
        result.map(|(executables, ms)| (executables, ms, size))
    }

    /// The pipeline's executables, and the ms its compile took.
    fn compile_module(&self, k: &Kernel, module: vk::ShaderModule, bindings: &[Vec<(u32, vk::DescriptorType)>], ir_dir: Option<&Path>) -> Result<(Vec<Value>, f64)> {
        let d = &self.device;
        // a layout of every binding the file declares: set 0 the storage buffers, set 1 the
        // params (a layout may hold bindings an entry point does not use)
        let sets: Vec<vk::DescriptorSetLayout> = bindings
            .iter()
            .map(|set| {
                let entries: Vec<vk::DescriptorSetLayoutBinding> = set
                    .iter()
                    .map(|&(binding, ty)| vk::DescriptorSetLayoutBinding::default().binding(binding).descriptor_type(ty).descriptor_count(1).stage_flags(vk::ShaderStageFlags::COMPUTE))
                    .collect();
                unsafe { d.create_descriptor_set_layout(&vk::DescriptorSetLayoutCreateInfo::default().bindings(&entries), None) }
            })
            .collect::<Result<_, _>>()?;
        let layout = unsafe { d.create_pipeline_layout(&vk::PipelineLayoutCreateInfo::default().set_layouts(&sets), None) }?;
        let entry = std::ffi::CString::new(k.entry)?;
        let mut flags = vk::PipelineCreateFlags::empty();
        if self.executables.is_some() {
            flags |= vk::PipelineCreateFlags::CAPTURE_STATISTICS_KHR;
            if ir_dir.is_some() {
                flags |= vk::PipelineCreateFlags::CAPTURE_INTERNAL_REPRESENTATIONS_KHR;
            }
        }
        let stage = vk::PipelineShaderStageCreateInfo::default().stage(vk::ShaderStageFlags::COMPUTE).module(module).name(&entry);
        let info = vk::ComputePipelineCreateInfo::default().flags(flags).stage(stage).layout(layout);
        let started = std::time::Instant::now();
        let made = unsafe { d.create_compute_pipelines(vk::PipelineCache::null(), &[info], None) };
        let compile_ms = started.elapsed().as_secs_f64() * 1e3;
        let result = match made {
            Ok(pipelines) => {
                let read = self.read_executables(k, pipelines[0], ir_dir).map(|executables| (executables, compile_ms));
                unsafe { d.destroy_pipeline(pipelines[0], None) };
                read
            }
            Err((_, e)) => Err(anyhow!("vkCreateComputePipelines: {e}")),
        };
        unsafe {
            d.destroy_pipeline_layout(layout, None);
            for s in sets {
                d.destroy_descriptor_set_layout(s, None);
            }
        }
        result
    }

    fn read_executables(&self, k: &Kernel, pipeline: vk::Pipeline, ir_dir: Option<&Path>) -> Result<Vec<Value>> {
        let Some(x) = &self.executables else {
            return Ok(Vec::new());
        };
        let props = unsafe { x.get_pipeline_executable_properties(&vk::PipelineInfoKHR::default().pipeline(pipeline)) }.context("vkGetPipelineExecutablePropertiesKHR")?;
        let mut out = Vec::new();
        for (i, p) in props.iter().enumerate() {
            let info = vk::PipelineExecutableInfoKHR::default().pipeline(pipeline).executable_index(i as u32);
            let mut statistics = Map::new();
            for s in unsafe { x.get_pipeline_executable_statistics(&info) }.context("vkGetPipelineExecutableStatisticsKHR")? {
                // SAFETY: the union's member is the one `format` names
                let value = unsafe {
                    match s.format {
                        vk::PipelineExecutableStatisticFormatKHR::BOOL32 => json!(s.value.b32 != 0),
                        vk::PipelineExecutableStatisticFormatKHR::INT64 => json!(s.value.i64),
                        vk::PipelineExecutableStatisticFormatKHR::UINT64 => json!(s.value.u64),
                        _ => json!(s.value.f64),
                    }
                };
                statistics.insert(c_text(s.name_as_c_str()), value);
            }
            let mut ir_files = Vec::new();
            if let Some(dir) = ir_dir {
                for (ir_name, text) in Self::internal_representations(x, &self.device, &info)? {
                    let file = dir.join(format!("{}.{i}.{}.txt", slug(&k.name()), slug(&ir_name)));
                    std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
                    ir_files.push(file.display().to_string());
                }
            }
            out.push(json!({
                "name": c_text(p.name_as_c_str()),
                "description": c_text(p.description_as_c_str()),
                "subgroup_size": p.subgroup_size,
                "statistics": statistics,
                "ir_files": ir_files,
            }));
        }
        Ok(out)
    }

    /// The executable's internal representations that are text (names and texts), in the
    /// extension's two calls: sizes, then the data.
    fn internal_representations(x: &ash::khr::pipeline_executable_properties::Device, device: &ash::Device, info: &vk::PipelineExecutableInfoKHR) -> Result<Vec<(String, String)>> {
        let fp = x.fp();
        let handle = device.handle();
        let mut count = 0u32;
        unsafe { (fp.get_pipeline_executable_internal_representations_khr)(handle, info, &mut count, std::ptr::null_mut()) }.result()?;
        let mut reps = vec![vk::PipelineExecutableInternalRepresentationKHR::default(); count as usize];
        unsafe { (fp.get_pipeline_executable_internal_representations_khr)(handle, info, &mut count, reps.as_mut_ptr()) }.result()?;
        let mut data: Vec<Vec<u8>> = reps.iter().map(|r| vec![0u8; r.data_size]).collect();
        for (r, d) in reps.iter_mut().zip(&mut data) {
            r.p_data = d.as_mut_ptr().cast();
        }
        unsafe { (fp.get_pipeline_executable_internal_representations_khr)(handle, info, &mut count, reps.as_mut_ptr()) }.result()?;
        Ok(reps
            .iter()
            .zip(data)
            .filter(|(r, _)| r.is_text != 0)
            .map(|(r, d)| (c_text(r.name_as_c_str()), String::from_utf8_lossy(d.split(|&b| b == 0).next().unwrap_or(&[])).into_owned()))
            .collect())
    }
}

impl Drop for Compiler {
    fn drop(&mut self) {
        unsafe {
            self.device.destroy_device(None);
            self.instance.destroy_instance(None);
        }
    }
}

/// The kernel's SPIR-V: its file's WGSL with its override values and zeroing under `checks`,
/// as wgpu writes it for its pipelines; and its workgroup with those values.
fn spirv(k: &Kernel, module: &naga::Module, info: &naga::valid::ModuleInfo, options: &naga::back::spv::Options, checks: ShaderChecks) -> Result<(Vec<u32>, WorkgroupSize)> {
    let (values, zeroing) = k.pipeline_options(checks);
    let mut constants = naga::back::PipelineConstants::default();
    for (name, value) in values {
        constants.insert(name.to_string(), value);
    }
    let mode = if zeroing { naga::back::spv::ZeroInitializeWorkgroupMemoryMode::Polyfill } else { naga::back::spv::ZeroInitializeWorkgroupMemoryMode::None };
    let options = naga::back::spv::Options { zero_initialize_workgroup_memory: mode, ..options.clone() };
    let (module, info) = naga::back::pipeline_constants::process_overrides(module, info, Some((naga::ShaderStage::Compute, k.entry)), &constants).map_err(|e| anyhow!("override values: {e}"))?;
    let size = workgroup_size(&module, &info, k.entry)?;
    let pipeline = naga::back::spv::PipelineOptions { shader_stage: naga::ShaderStage::Compute, entry_point: k.entry.to_string() };
    let words = naga::back::spv::write_vec(&module, &info, &options, Some(&pipeline)).map_err(|e| anyhow!("naga's SPIR-V writer: {e}"))?;
    Ok((words, size))
}

/// What a kernel's workgroup asks of a multiprocessor besides registers (with the driver's
/// register count, how many of its workgroups one holds: report.py's occupancy column).
struct WorkgroupSize {
    invocations: u32,
    /// The workgroup memory its entry point uses.
    workgroup_bytes: u32,
}

/// `entry`'s workgroup in `module` (its overrides replaced by their values).
fn workgroup_size(module: &naga::Module, info: &naga::valid::ModuleInfo, entry: &str) -> Result<WorkgroupSize> {
    let index = module.entry_points.iter().position(|e| e.name == entry).ok_or_else(|| anyhow!("no entry point {entry}"))?;
    let uses = info.get_entry_point(index);
    let workgroup_bytes = module
        .global_variables
        .iter()
        .filter(|(handle, var)| var.space == naga::AddressSpace::WorkGroup && !uses[*handle].is_empty())
        .map(|(_, var)| module.types[var.ty].inner.size(module.to_ctx()))
        .sum();
    Ok(WorkgroupSize { invocations: module.entry_points[index].workgroup_size.iter().product(), workgroup_bytes })
}

fn parsed(shader: Shader) -> Result<(naga::Module, naga::valid::ModuleInfo)> {
    let source = shader.source();
    let module = naga::front::wgsl::parse_str(source).map_err(|e| anyhow!("{}: {}", shader.file_name(), e.emit_to_string(source)))?;
    let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
        .validate(&module)
        .map_err(|e| anyhow!("{}: {}", shader.file_name(), e.emit_to_string(source)))?;
    Ok((module, info))
}

/// The file's buffer bindings by group: (binding, descriptor type) of groups 0 and 1.
fn bindings(shader: Shader, module: &naga::Module) -> Result<Vec<Vec<(u32, vk::DescriptorType)>>> {
    let mut sets: HashMap<u32, Vec<(u32, vk::DescriptorType)>> = HashMap::new();
    for (_, var) in module.global_variables.iter() {
        let (Some(at), ty) = (&var.binding, &var.space) else { continue };
        let ty = match ty {
            naga::AddressSpace::Storage { .. } => vk::DescriptorType::STORAGE_BUFFER,
            naga::AddressSpace::Uniform => vk::DescriptorType::UNIFORM_BUFFER,
            _ => bail!("{}: binding {} of group {} is neither a storage buffer nor a uniform", shader.file_name(), at.binding, at.group),
        };
        sets.entry(at.group).or_default().push((at.binding, ty));
    }
    let groups = sets.keys().max().map_or(0, |g| g + 1);
    Ok((0..groups).map(|g| sets.remove(&g).unwrap_or_default()).collect())
}

fn c_text(name: Result<&CStr, std::ffi::FromBytesUntilNulError>) -> String {
    name.map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// A kernel's or representation's name as a file name.
fn slug(name: &str) -> String {
    let s: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    s.split('-').filter(|p| !p.is_empty()).collect::<Vec<_>>().join("-")
}
