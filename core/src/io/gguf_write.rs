//! Writing GGUF v3: metadata with llama.cpp's value types, then the tensor directory and the
//! tensor data, each tensor at a multiple of the alignment (32 bytes, GGUF's default).

use super::gguf::GgmlType;

/// Where GGUF readers expect tensor data (`general.alignment` unset).
const ALIGNMENT: usize = 32;

/// A metadata value, in the type llama.cpp's converter writes for it.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    Strs(Vec<String>),
    I32s(Vec<i32>),
    F32s(Vec<f32>),
}

/// One tensor: its GGUF name, its shape in ggml order (innermost first) and its bytes.
pub struct GgufTensor {
    pub name: String,
    pub dims: Vec<usize>,
    pub ty: GgmlType,
    pub data: Vec<u8>,
}

#[derive(Default)]
pub struct GgufWriter {
    pub meta: Vec<(String, MetaValue)>,
    pub tensors: Vec<GgufTensor>,
}

impl GgufWriter {
    pub fn set(&mut self, key: impl Into<String>, value: MetaValue) {
        self.meta.push((key.into(), value));
    }

    pub fn tensor(&mut self, name: impl Into<String>, dims: Vec<usize>, ty: GgmlType, data: Vec<u8>) {
        self.tensors.push(GgufTensor { name: name.into(), dims, ty, data });
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(b"GGUF");
        out.extend(3u32.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.meta.len() as u64).to_le_bytes());
        for (key, value) in &self.meta {
            put_str(&mut out, key);
            put_value(&mut out, value);
        }
        let mut offset = 0usize;
        for t in &self.tensors {
            put_str(&mut out, &t.name);
            out.extend((t.dims.len() as u32).to_le_bytes());
            for &d in &t.dims {
                out.extend((d as u64).to_le_bytes());
            }
            out.extend(t.ty.id().to_le_bytes());
            out.extend((offset as u64).to_le_bytes());
            offset = (offset + t.data.len()).next_multiple_of(ALIGNMENT);
        }
        out.resize(out.len().next_multiple_of(ALIGNMENT), 0);
        for t in &self.tensors {
            out.extend(&t.data);
            out.resize(out.len().next_multiple_of(ALIGNMENT), 0);
        }
        out
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

// GGUF's value type ids
const UINT32: u32 = 4;
const INT32: u32 = 5;
const FLOAT32: u32 = 6;
const BOOL: u32 = 7;
const STRING: u32 = 8;
const ARRAY: u32 = 9;

fn put_value(out: &mut Vec<u8>, v: &MetaValue) {
    let array = |out: &mut Vec<u8>, ty: u32, n: usize| {
        out.extend(ARRAY.to_le_bytes());
        out.extend(ty.to_le_bytes());
        out.extend((n as u64).to_le_bytes());
    };
    match v {
        MetaValue::U32(x) => {
            out.extend(UINT32.to_le_bytes());
            out.extend(x.to_le_bytes());
        }
        MetaValue::I32(x) => {
            out.extend(INT32.to_le_bytes());
            out.extend(x.to_le_bytes());
        }
        MetaValue::F32(x) => {
            out.extend(FLOAT32.to_le_bytes());
            out.extend(x.to_le_bytes());
        }
        MetaValue::Bool(x) => {
            out.extend(BOOL.to_le_bytes());
            out.push(u8::from(*x));
        }
        MetaValue::Str(s) => {
            out.extend(STRING.to_le_bytes());
            put_str(out, s);
        }
        MetaValue::Strs(v) => {
            array(out, STRING, v.len());
            v.iter().for_each(|s| put_str(out, s));
        }
        MetaValue::I32s(v) => {
            array(out, INT32, v.len());
            v.iter().for_each(|x| out.extend(x.to_le_bytes()));
        }
        MetaValue::F32s(v) => {
            array(out, FLOAT32, v.len());
            v.iter().for_each(|x| out.extend(x.to_le_bytes()));
        }
    }
}
