//! CPU reference implementations of every op, in f64, written for clarity rather than
//! speed. GPU kernels are tested against these; these are tested against finite
//! differences. Argument order follows the kernels: outputs first, then inputs, then sizes.

/// out(M,N) = inp(M,K)·weight(N,K)ᵀ
pub fn matmul_forward(out: &mut [f64], inp: &[f64], weight: &[f64], m: usize, n: usize, k: usize) {
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = (0..k).map(|r| inp[i * k + r] * weight[j * k + r]).sum();
        }
    }
}

/// dinp(M,K) = dout(M,N)·weight(N,K)
pub fn matmul_backward_input(dinp: &mut [f64], dout: &[f64], weight: &[f64], m: usize, n: usize, k: usize) {
    for i in 0..m {
        for r in 0..k {
            dinp[i * k + r] = (0..n).map(|j| dout[i * n + j] * weight[j * k + r]).sum();
        }
    }
}

/// dweight(N,K) = dout(M,N)ᵀ·inp(M,K)
pub fn matmul_backward_weight(dweight: &mut [f64], dout: &[f64], inp: &[f64], m: usize, n: usize, k: usize) {
    for j in 0..n {
        for r in 0..k {
            dweight[j * k + r] = (0..m).map(|i| dout[i * n + j] * inp[i * k + r]).sum();
        }
    }
}
