// 4-bit values packed as GGUF's Q4_0 and Q4_1 pack them, included by their matmul files.

// Nibbles of the 4 bytes of `word`, shifted by `shift` (0: low nibbles, 4: high).
fn nib4(word: u32, shift: u32) -> vec4<f32> {
    return vec4<f32>(f32((word >> shift) & 15u), f32((word >> (8u + shift)) & 15u),
                     f32((word >> (16u + shift)) & 15u), f32((word >> (24u + shift)) & 15u));
}

// The nibbles of elements 8·s .. 8·s + 7 of a block's 16 bytes q: element j < 16 is the low
// nibble of byte j, element j + 16 its high nibble (GGUF's Q4_0 and Q4_1 order).
fn nib8(q: vec4<u32>, s: u32) -> array<vec4<f32>, 2> {
    let shift = select(0u, 4u, s >= 2u);
    let odd = (s & 1u) == 1u;
    return array<vec4<f32>, 2>(nib4(select(q.x, q.z, odd), shift), nib4(select(q.y, q.w, odd), shift));
}

// Σ nibble·x over a block's 32 elements.
fn nib_dot(q: vec4<u32>, x: array<vec4<f32>, 8>) -> f32 {
    return dot(nib4(q.x, 0u), x[0]) + dot(nib4(q.y, 0u), x[1]) + dot(nib4(q.z, 0u), x[2]) + dot(nib4(q.w, 0u), x[3])
         + dot(nib4(q.x, 4u), x[4]) + dot(nib4(q.y, 4u), x[5]) + dot(nib4(q.z, 4u), x[6]) + dot(nib4(q.w, 4u), x[7]);
}

fn sum32(x: array<vec4<f32>, 8>) -> f32 {
    return dot(x[0] + x[1] + x[2] + x[3] + x[4] + x[5] + x[6] + x[7], vec4<f32>(1.0));
}
