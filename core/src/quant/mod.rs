//! Block formats for frozen weights and their CPU (de)quantizers. The byte layouts are the
//! ones the matmul_<format>.wgsl kernels read (shaders/README.md); GGUF's Q4_0, Q4_1 and
//! Q8_0 are llama.cpp's exact layouts, so tensors from a GGUF file upload unchanged.
//! A tensor is (rows, cols) in the nn.Linear layout; blocks run along cols (the K axis).

pub mod kquants;
mod nf4;
mod nf4_codebook;

use half::f16;

pub use nf4::{Nf4Scales, NF4_CODEBOOK};

use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantFormat {
    F16,
    Q4_0,
    Q4_1,
    Q8_0,
    /// QLoRA's 4-bit NormalFloat, blocks of 64, absmax double-quantized in groups of 256.
    Nf4,
}

impl QuantFormat {
    pub const ALL: [QuantFormat; 5] = [QuantFormat::F16, QuantFormat::Q4_0, QuantFormat::Q4_1, QuantFormat::Q8_0, QuantFormat::Nf4];

    /// Elements per block along a row.
    pub fn block_size(self) -> usize {
        match self {
            QuantFormat::F16 => 8, // the kernels read 8 values at a time
            QuantFormat::Q4_0 | QuantFormat::Q4_1 | QuantFormat::Q8_0 => 32,
            QuantFormat::Nf4 => 64,
        }
    }

    /// Bytes of `q` per block.
    pub fn block_bytes(self) -> usize {
        match self {
            QuantFormat::F16 => 16,
            QuantFormat::Q4_0 => 18, // f16 d, 16 bytes of nibbles
            QuantFormat::Q4_1 => 20, // f16 d, f16 m, 16 bytes of nibbles
            QuantFormat::Q8_0 => 34, // f16 d, 32 × i8
            QuantFormat::Nf4 => 32,  // 64 nibbles; absmax lives in Nf4Scales
        }
    }
}

/// A quantized (rows, cols) matrix: packed blocks `q` and, for NF4, the absmax scales.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantTensor {
    pub format: QuantFormat,
    pub rows: usize,
    pub cols: usize,
    pub block_size: usize,
    pub q: Vec<u8>,
    pub nf4: Option<Nf4Scales>,
}

impl QuantTensor {
    /// Quantizes row-major f32 data; cols must be a multiple of the block size.
    pub fn quantize(format: QuantFormat, data: &[f32], rows: usize, cols: usize) -> Result<Self> {
        check_shape(format, data.len(), rows, cols)?;
        let bs = format.block_size();
        let mut q = Vec::with_capacity(data.len() / bs * format.block_bytes());
        let mut nf4 = None;
        match format {
            QuantFormat::F16 => q.extend(data.iter().flat_map(|&x| f16::from_f32(x).to_le_bytes())),
            QuantFormat::Q8_0 => data.chunks(bs).for_each(|b| quantize_q8_0(b, &mut q)),
            QuantFormat::Q4_0 => data.chunks(bs).for_each(|b| quantize_q4_0(b, &mut q)),
            QuantFormat::Q4_1 => data.chunks(bs).for_each(|b| quantize_q4_1(b, &mut q)),
            QuantFormat::Nf4 => nf4 = Some(nf4::quantize(data, &mut q)),
        }
        Ok(QuantTensor { format, rows, cols, block_size: bs, q, nf4 })
    }

    /// Wraps bytes already in `format`'s block layout (a GGUF tensor), checking the length.
    pub fn from_blocks(format: QuantFormat, rows: usize, cols: usize, q: Vec<u8>) -> Result<Self> {
        check_shape(format, rows * cols, rows, cols)?;
        if format == QuantFormat::Nf4 {
            return Err(Error::Shape("NF4 tensors carry separate scales; use quantize".into()));
        }
        let want = rows * cols / format.block_size() * format.block_bytes();
        if q.len() != want {
            return Err(Error::Shape(format!(
                "a {format:?} tensor of {rows}×{cols} needs {want} bytes, got {}",
                q.len()
            )));
        }
        Ok(QuantTensor { format, rows, cols, block_size: format.block_size(), q, nf4: None })
    }

    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.rows * self.cols);
        self.dequantize_rows_into(0, self.rows, &mut out);
        out
    }

    /// Rows `start..end` in f32, appended to `out` (a row's blocks are contiguous).
    pub fn dequantize_rows_into(&self, start: usize, end: usize, out: &mut Vec<f32>) {
        let bb = self.format.block_bytes();
        let row_blocks = self.cols / self.block_size;
        let q = &self.q[start * row_blocks * bb..end * row_blocks * bb];
        match self.format {
            QuantFormat::F16 => out.extend(kquants::dequantize_f16(q)),
            QuantFormat::Q8_0 => q.chunks(bb).for_each(|b| {
                let d = le_f16(b, 0);
                out.extend(b[2..34].iter().map(|&v| v as i8 as f32 * d));
            }),
            QuantFormat::Q4_0 => q.chunks(bb).for_each(|b| {
                let d = le_f16(b, 0);
                out.extend(nibbles(&b[2..18]).map(|v| (v as f32 - 8.0) * d));
            }),
            QuantFormat::Q4_1 => q.chunks(bb).for_each(|b| {
                let (d, m) = (le_f16(b, 0), le_f16(b, 2));
                out.extend(nibbles(&b[4..20]).map(|v| v as f32 * d + m));
            }),
            QuantFormat::Nf4 => nf4::dequantize(q, self.nf4.as_ref().expect("NF4 scales"), start * row_blocks, out),
        }
    }
}

fn check_shape(format: QuantFormat, len: usize, rows: usize, cols: usize) -> Result<()> {
    let bs = format.block_size();
    if len != rows * cols || !cols.is_multiple_of(bs) || rows == 0 {
        return Err(Error::Shape(format!(
            "{format:?} needs a non-empty (rows, cols) matrix with cols a multiple of {bs}; \
             got {rows}×{cols} with {len} values"
        )));
    }
    Ok(())
}

/// The little-endian f16 at byte `at`, as f32.
pub(crate) fn le_f16(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// GGUF's 4-bit order: the 16 low nibbles are elements 0..16, the high nibbles 16..32.
fn nibbles(qs: &[u8]) -> impl Iterator<Item = u8> + '_ {
    qs.iter().map(|b| b & 0x0F).chain(qs.iter().map(|b| b >> 4))
}

fn quantize_q8_0(block: &[f32], out: &mut Vec<u8>) {
    let amax = block.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let d = amax / 127.0;
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    out.extend(f16::from_f32(d).to_le_bytes());
    out.extend(block.iter().map(|&x| (x * id).round().clamp(-127.0, 127.0) as i8 as u8));
}

fn pack_nibbles(q: &[u8; 32], out: &mut Vec<u8>) {
    out.extend((0..16).map(|j| q[j] | (q[j + 16] << 4)));
}

/// llama.cpp's reference: d = (signed absmax) / −8, q = clamp(round(x/d) + 8, 0, 15).
fn quantize_q4_0(block: &[f32], out: &mut Vec<u8>) {
    let max = block.iter().fold(0.0f32, |m, &x| if x.abs() > m.abs() { x } else { m });
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut q = [0u8; 32];
    for (qi, &x) in q.iter_mut().zip(block) {
        *qi = ((x * id + 8.5) as i32).clamp(0, 15) as u8;
    }
    out.extend(f16::from_f32(d).to_le_bytes());
    pack_nibbles(&q, out);
}

/// llama.cpp's reference: d = (max − min) / 15, m = min, q = round((x − min)/d).
fn quantize_q4_1(block: &[f32], out: &mut Vec<u8>) {
    let (min, max) = block.iter().fold((f32::MAX, f32::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    let d = (max - min) / 15.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut q = [0u8; 32];
    for (qi, &x) in q.iter_mut().zip(block) {
        *qi = (((x - min) * id + 0.5) as i32).clamp(0, 15) as u8;
    }
    out.extend(f16::from_f32(d).to_le_bytes());
    out.extend(f16::from_f32(min).to_le_bytes());
    pack_nibbles(&q, out);
}
