// An RMSNorm of the input rows, applied by the matrix-vector kernels as they read them (the
// includer binds its weight `norm_w` before the output): row i of the input is a residual
// stream row x, and the product is taken with norm_w ⊙ x / sqrt(mean(x²) + eps), the norm a
// separate launch would have written. The kernels fold norm_w into the weights they read and
// scale each row's sum by 1/rms at the end, the sum of squares reduced along with it.

const NORMED: bool = true;

fn norm_weight(r: u32) -> f32 {
    return norm_w[r];
}

// norm_w[4v .. 4v + 4]
fn norm_weight4(v: u32) -> vec4<f32> {
    let r = 4u * v;
    return vec4<f32>(norm_w[r], norm_w[r + 1u], norm_w[r + 2u], norm_w[r + 3u]);
}
