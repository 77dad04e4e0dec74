// A low-rank term's operands H and V (their bindings: the includer's, before its output).

const LOW_RANK: bool = true;

fn term_h_at(idx: u32) -> f32 {
    return term_h[idx];
}

fn term_v_at(idx: u32) -> f32 {
    return term_v[idx];
}
