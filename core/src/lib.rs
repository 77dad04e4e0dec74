//! hearth-core: everything Hearth shares between the native CLI and the web app.
//!
//! The GPU work is done by hand-written WGSL kernels (`shaders/`), launched through
//! [`gpu::GpuContext`]. Every kernel has a CPU reference in [`ops::cpu`].
//! This crate does no file I/O, spawns no threads and never blocks on the GPU in code
//! that the web build compiles.

pub mod error;
pub mod gpu;
pub mod io;
pub mod lora;
pub mod model;
pub mod ops;
pub mod quant;
pub mod rng;
pub mod train;

pub use error::{Error, Result};
pub use gpu::{GpuBuffer, GpuContext, Profile};
