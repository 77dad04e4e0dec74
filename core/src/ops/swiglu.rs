//! Gated MLP activations: out = act(gate)·up, with act SiLU (SwiGLU: Llama, Qwen, …) or GELU
//! with PyTorch's tanh approximation (GeGLU: Gemma).

use super::{check_len, grid_1d};
use crate::gpu::{Kernel, Shader};
use crate::{GpuBuffer, GpuContext, Result};

/// The activation of a gated MLP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Silu,
    /// gelu_pytorch_tanh
    GeluTanh,
}

impl Activation {
    pub fn name(self) -> &'static str {
        match self {
            Activation::Silu => "silu",
            Activation::GeluTanh => "gelu_pytorch_tanh",
        }
    }

    fn entries(self) -> (&'static str, &'static str) {
        match self {
            Activation::Silu => ("swiglu_forward", "swiglu_backward"),
            Activation::GeluTanh => ("geglu_forward", "geglu_backward"),
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
}

/// out = act(gate)·up over n values.
pub fn gated_forward(ctx: &GpuContext, act: Activation, out: &GpuBuffer, gate: &GpuBuffer, up: &GpuBuffer, n: usize) -> Result<()> {
    let op = act.entries().0;
    for (name, b) in [("gate", gate), ("up", up), ("out", out)] {
        check_len(op, name, b, n)?;
    }
    ctx.dispatch(&Kernel::new(Shader::Swiglu, op, 0), &[gate, up], &[out], &Params { n: n as u32 }, grid_1d(n as u64, 256))
}

/// dgate, dup of gated_forward for the upstream gradient dout.
#[allow(clippy::too_many_arguments)]
pub fn gated_backward(ctx: &GpuContext, act: Activation, dgate: &GpuBuffer, dup: &GpuBuffer, dout: &GpuBuffer, gate: &GpuBuffer, up: &GpuBuffer, n: usize) -> Result<()> {
    let op = act.entries().1;
    for (name, b) in [("dout", dout), ("gate", gate), ("up", up), ("dgate", dgate), ("dup", dup)] {
        check_len(op, name, b, n)?;
    }
    ctx.dispatch(&Kernel::new(Shader::Swiglu, op, 3), &[dout, gate, up], &[dgate, dup], &Params { n: n as u32 }, grid_1d(n as u64, 256))
}
