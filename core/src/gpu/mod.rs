//! The GPU runtime: one [`GpuContext`] per process (adapter, device, queue, limits), a
//! buffer pool with allocation accounting, pipelines cached by (shader, entry point,
//! variant), dispatches recorded into one pending encoder, and async readback.

mod context;
mod dispatch;
pub(crate) mod layout;
mod pool;
mod readback;
mod recording;
mod shader;

pub use context::{AdapterSummary, Arena, ContextOptions, CoopShape, GpuContext, KernelPaths, ShaderChecks, TileChoice};
pub use dispatch::{grid_1d, Kernel, Variant};
pub use pool::{GpuBuffer, MemoryStats};
pub(crate) use readback::PendingRead;
pub use recording::{KernelStat, KernelTiming, Profile, GRID_MARK};
pub use shader::Shader;
