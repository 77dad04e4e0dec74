//! CPU dequantizers for GGUF types Hearth does not run in a kernel: the k-quants
//! (Q4_K, Q5_K, Q6_K, super-blocks of 256) and bf16; and plain f16 arrays. Layouts follow
//! ggml-quants.c.

use half::bf16;

use super::le_f16;

/// The 6-bit scale and min of sub-block `j` from a k-quant's 12 packed scale bytes.
fn scale_min_k4(j: usize, q: &[u8]) -> (f32, f32) {
    if j < 4 {
        ((q[j] & 63) as f32, (q[j + 4] & 63) as f32)
    } else {
        (((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4)) as f32, ((q[j + 4] >> 4) | ((q[j] >> 6) << 4)) as f32)
    }
}

/// Q4_K block (144 bytes): f16 d, f16 dmin, 12 scale bytes, 128 bytes of nibbles.
pub fn dequantize_q4_k(block: &[u8], out: &mut [f32]) {
    let (d, min) = (le_f16(block, 0), le_f16(block, 2));
    let scales = &block[4..16];
    let qs = &block[16..144];
    for chunk in 0..4 {
        let (s1, m1) = scale_min_k4(2 * chunk, scales);
        let (s2, m2) = scale_min_k4(2 * chunk + 1, scales);
        let q = &qs[32 * chunk..32 * chunk + 32];
        let y = &mut out[64 * chunk..64 * chunk + 64];
        for l in 0..32 {
            y[l] = d * s1 * (q[l] & 0xF) as f32 - min * m1;
            y[32 + l] = d * s2 * (q[l] >> 4) as f32 - min * m2;
        }
    }
}

/// Q5_K block (176 bytes): f16 d, f16 dmin, 12 scale bytes, 32 bytes of high bits, 128 of nibbles.
pub fn dequantize_q5_k(block: &[u8], out: &mut [f32]) {
    let (d, min) = (le_f16(block, 0), le_f16(block, 2));
    let scales = &block[4..16];
    let qh = &block[16..48];
    let qs = &block[48..176];
    for chunk in 0..4 {
        let (s1, m1) = scale_min_k4(2 * chunk, scales);
        let (s2, m2) = scale_min_k4(2 * chunk + 1, scales);
        let (u1, u2) = (1u8 << (2 * chunk), 2u8 << (2 * chunk));
        let q = &qs[32 * chunk..32 * chunk + 32];
        let y = &mut out[64 * chunk..64 * chunk + 64];
        for l in 0..32 {
            let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
            let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
            y[l] = d * s1 * ((q[l] & 0xF) + h1) as f32 - min * m1;
            y[32 + l] = d * s2 * ((q[l] >> 4) + h2) as f32 - min * m2;
        }
    }
}

/// Q6_K block (210 bytes): 128 bytes low nibbles, 64 bytes high 2-bit pairs, 16 i8 scales, f16 d.
pub fn dequantize_q6_k(block: &[u8], out: &mut [f32]) {
    let d = le_f16(block, 208);
    for half_ in 0..2 {
        let ql = &block[64 * half_..64 * half_ + 64];
        let qh = &block[128 + 32 * half_..128 + 32 * half_ + 32];
        let sc = &block[192 + 8 * half_..192 + 8 * half_ + 8];
        let y = &mut out[128 * half_..128 * half_ + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
            y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
    }
}

pub fn dequantize_bf16(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
}

pub fn dequantize_f16(bytes: &[u8]) -> Vec<f32> {
    (0..bytes.len() / 2).map(|i| le_f16(bytes, 2 * i)).collect()
}
