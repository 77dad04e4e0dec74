//! NF4 with double quantization (QLoRA). Codes: 4-bit indices into NF4_CODEBOOK, eight per
//! little-endian u32, element j of a word in bits 4j..4j+3. Each block of 64 has an absmax;
//! the absmax values are stored as signed 8-bit codes, in groups of 256 blocks with one f32
//! scale per group, around one f32 offset (their mean):
//!   absmax[b] = offset + scales[b / 256] · codes[b] / 127,   x = NF4_CODEBOOK[code] · absmax

pub use super::nf4_codebook::NF4_CODEBOOK;

pub const BLOCK: usize = 64;
pub const GROUP: usize = 256;

/// The double-quantized absmax of every block.
#[derive(Clone, Debug, PartialEq)]
pub struct Nf4Scales {
    pub codes: Vec<i8>,
    pub scales: Vec<f32>,
    pub offset: f32,
}

impl Nf4Scales {
    pub fn absmax(&self, block: usize) -> f32 {
        self.offset + self.scales[block / GROUP] * self.codes[block] as f32 / 127.0
    }
}

fn nearest_code(x: f32) -> u8 {
    let mut best = 0;
    for (i, &c) in NF4_CODEBOOK.iter().enumerate() {
        if (x - c).abs() < (x - NF4_CODEBOOK[best]).abs() {
            best = i;
        }
    }
    best as u8
}

pub(super) fn quantize(data: &[f32], q: &mut Vec<u8>) -> Nf4Scales {
    let absmax: Vec<f32> = data.chunks(BLOCK).map(|b| b.iter().fold(0.0f32, |m, x| m.max(x.abs()))).collect();
    let offset = absmax.iter().sum::<f32>() / absmax.len() as f32;
    let scales: Vec<f32> =
        absmax.chunks(GROUP).map(|g| g.iter().fold(0.0f32, |m, a| m.max((a - offset).abs()))).collect();
    let codes: Vec<i8> = absmax
        .iter()
        .enumerate()
        .map(|(b, a)| {
            let s = scales[b / GROUP];
            if s > 0.0 { ((a - offset) / s * 127.0).round().clamp(-127.0, 127.0) as i8 } else { 0 }
        })
        .collect();
    let dq = Nf4Scales { codes, scales, offset };
    for (b, block) in data.chunks(BLOCK).enumerate() {
        // Quantize against the absmax the kernel will see, not the exact one.
        let a = dq.absmax(b);
        let inv = if a > 0.0 { 1.0 / a } else { 0.0 };
        for pair in block.chunks(2) {
            let lo = nearest_code(pair[0] * inv);
            let hi = nearest_code(pair[1] * inv);
            q.push(lo | (hi << 4));
        }
    }
    dq
}

pub(super) fn dequantize(q: &[u8], s: &Nf4Scales, first_block: usize, out: &mut Vec<f32>) {
    for (b, block) in q.chunks(BLOCK / 2).enumerate() {
        let a = s.absmax(first_block + b);
        for &byte in block {
            out.push(NF4_CODEBOOK[(byte & 0x0F) as usize] * a);
            out.push(NF4_CODEBOOK[(byte >> 4) as usize] * a);
        }
    }
}
