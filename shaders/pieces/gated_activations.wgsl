// The gated MLPs' activations (swiglu.wgsl, and the matrix-vector kernels that end in one):
// silu(x) = x·σ(x), and gelu with PyTorch's tanh approximation.

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

// tanh(u) with u clamped: the same value in f32 (|u| > 10 gives ±1), and no overflow in
// implementations that compute it through exp.
fn tanh_c(u: f32) -> f32 {
    return tanh(clamp(u, -10.0, 10.0));
}

const GELU_K: f32 = 0.7978845608028654; // √(2/π)

fn gelu(x: f32) -> f32 {
    return 0.5 * x * (1.0 + tanh_c(GELU_K * (x + 0.044715 * x * x * x)));
}

// act(gate)·up: silu for `gelu` false (SwiGLU), else gelu (GeGLU).
fn gated(gate: f32, up: f32, use_gelu: bool) -> f32 {
    return select(gate * sigmoid(gate), gelu(gate), use_gelu) * up;
}
