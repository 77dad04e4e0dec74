// A low-rank term's operands H and V (their bindings: the includer's, before its output).

const LOW_RANK: bool = true;

fn term_h_at(idx: u32) -> f32 {
    return term_h[idx];
}

fn term_v_at(idx: u32) -> f32 {
    return term_v[idx];
}

// H(i, q) for output row j of the matrix-vector kernels. Over stacked weights (q, k and v as
// one matmul, each with its LoRA) the targets' x·Aᵀ lie side by side, term_h_part apart, and
// output rows from term_start1 on read the second's, from term_start2 on the third's; else
// the starts lie past N and term_h_row is term_r. (The rows of a target the adapter leaves
// alone are gemv_term's to skip.)
fn term_h_of(j: u32, i: u32, q: u32) -> f32 {
    let part = select(0u, 1u, j >= p.term_start1) + select(0u, 1u, j >= p.term_start2);
    return term_h[part * p.term_h_part + i * p.term_h_row + q];
}

// The matrix-vector kernels' term for row i and output row j: term_scale·Σ_q H(i, q)·V(j, q),
// summed by the one invocation that stores the output, after the reduction (so that an
// input norm's 1/rms, which scales the product, leaves it alone). Over stacked weights, the
// term_skip rows from term_skip_at on (k of PEFT's default q_proj, v_proj) take none, and V
// holds no rows for them.
fn gemv_term(j: u32, i: u32) -> f32 {
    if (j >= p.term_skip_at && j - p.term_skip_at < p.term_skip) {
        return 0.0;
    }
    let vj = select(j, j - p.term_skip, j >= p.term_skip_at);
    var t = 0.0;
    for (var q = 0u; q < p.term_r; q++) {
        t += term_h_of(j, i, q) * term_v_at(vj * p.term_v_sj + q * p.term_v_sr);
    }
    return p.term_scale * t;
}
