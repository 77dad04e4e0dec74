//! GGUF v3 reader (llama.cpp's single-file format): the file in memory, or read by byte
//! ranges (the web page: only the header is read whole, then a tensor at a time). Every
//! length and offset read from the file is checked against the file's length before anything
//! is allocated from it, so a truncated or corrupt file gives an error, never a panic or a
//! huge alloc.

use std::borrow::Cow;
use std::collections::BTreeMap;

use super::ReadRange;
use crate::{Error, Result};

/// ggml tensor types Hearth reads (ggml.h `enum ggml_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q8_0,
    Q4K,
    Q5K,
    Q6K,
    Bf16,
}

impl GgmlType {
    const IDS: [(GgmlType, u32); 9] = [
        (GgmlType::F32, 0),
        (GgmlType::F16, 1),
        (GgmlType::Q4_0, 2),
        (GgmlType::Q4_1, 3),
        (GgmlType::Q8_0, 8),
        (GgmlType::Q4K, 12),
        (GgmlType::Q5K, 13),
        (GgmlType::Q6K, 14),
        (GgmlType::Bf16, 30),
    ];

    fn from_id(id: u32) -> Option<Self> {
        Self::IDS.iter().find(|(_, i)| *i == id).map(|(t, _)| *t)
    }

    /// ggml's id of the type.
    pub fn id(self) -> u32 {
        Self::IDS.iter().find(|(t, _)| *t == self).map(|(_, i)| *i).expect("every type has an id")
    }

    /// (elements, bytes) per block.
    pub fn block(self) -> (usize, usize) {
        match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 | GgmlType::Bf16 => (1, 2),
            GgmlType::Q4_0 => (32, 18),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q8_0 => (32, 34),
            GgmlType::Q4K => (256, 144),
            GgmlType::Q5K => (256, 176),
            GgmlType::Q6K => (256, 210),
        }
    }
}

/// The names ggml gives the type ids, for error messages about unsupported ones.
fn ggml_type_name(id: u32) -> String {
    const NAMES: [&str; 31] = [
        "F32", "F16", "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
        "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64",
        "F64", "IQ1_M", "BF16",
    ];
    NAMES.get(id as usize).map_or_else(|| format!("type id {id}"), |n| n.to_string())
}

#[derive(Clone, Debug, PartialEq)]
pub enum GgufValue {
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
    Str(String),
    Array(Vec<GgufValue>),
}

impl GgufValue {
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U64(v) => Some(v),
            GgufValue::I64(v) if v >= 0 => Some(v as u64),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F64(v) => Some(v),
            GgufValue::U64(v) => Some(v as f64),
            GgufValue::I64(v) => Some(v as f64),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(b) => Some(b),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct GgufTensorInfo {
    pub name: String,
    /// ggml order: dims[0] is the innermost (contiguous) axis.
    pub dims: Vec<usize>,
    pub ty: GgmlType,
    /// Absolute byte range in the file.
    pub start: usize,
    pub len: usize,
}

impl GgufTensorInfo {
    pub fn elements(&self) -> usize {
        self.dims.iter().product()
    }

    /// (rows, cols) of a matrix in the nn.Linear layout; a vector is (1, n).
    pub fn rows_cols(&self) -> (usize, usize) {
        let cols = self.dims.first().copied().unwrap_or(1);
        (self.elements() / cols.max(1), cols)
    }
}

/// A parsed GGUF file: metadata and tensor directory; [`Gguf::data`] gives a tensor's bytes.
pub struct Gguf<'a> {
    pub metadata: BTreeMap<String, GgufValue>,
    pub tensors: Vec<GgufTensorInfo>,
    bytes: Bytes<'a>,
}

/// Where a tensor's bytes come from.
enum Bytes<'a> {
    Whole(&'a [u8]),
    Ranges { reader: &'a dyn ReadRange, name: String },
}

/// Reads the header from `b`, the first bytes of a file of `total` bytes.
struct Reader<'a> {
    b: &'a [u8],
    total: usize,
    pos: usize,
    file: &'a str,
    /// A read ran past `b` but not past the file: a longer prefix may parse.
    short: bool,
}

impl<'a> Reader<'a> {
    fn err(&self, what: &str) -> Error {
        Error::bad_file(self.file, format!("{what} at byte {} (file is {} bytes)", self.pos, self.total))
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n);
        match end {
            Some(end) if end <= self.b.len() => {
                let s = &self.b[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            _ => {
                self.short = end.is_some_and(|e| e <= self.total);
                Err(self.err(&format!("truncated file: {what} needs {n} more bytes")))
            }
        }
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }

    /// A count that will size an allocation: each item takes at least `min_item` bytes,
    /// so more items than the remaining bytes can hold means a corrupt file.
    fn count(&mut self, what: &str, min_item: usize) -> Result<usize> {
        let n = self.u64(what)?;
        let left = (self.total - self.pos) as u64;
        if n > left / min_item.max(1) as u64 {
            return Err(self.err(&format!("{what} is {n}, more than the {left} remaining bytes can hold")));
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.count(what, 1)?;
        let s = self.take(n, what)?;
        String::from_utf8(s.to_vec()).map_err(|_| self.err(&format!("{what} is not UTF-8")))
    }

    fn value(&mut self, ty: u32, key: &str, depth: u32) -> Result<GgufValue> {
        Ok(match ty {
            0 => GgufValue::U64(self.take(1, key)?[0] as u64),
            1 => GgufValue::I64(self.take(1, key)?[0] as i8 as i64),
            2 => GgufValue::U64(u16::from_le_bytes(self.take(2, key)?.try_into().unwrap()) as u64),
            3 => GgufValue::I64(i16::from_le_bytes(self.take(2, key)?.try_into().unwrap()) as i64),
            4 => GgufValue::U64(self.u32(key)? as u64),
            5 => GgufValue::I64(self.u32(key)? as i32 as i64),
            6 => GgufValue::F64(f32::from_bits(self.u32(key)?) as f64),
            7 => GgufValue::Bool(self.take(1, key)?[0] != 0),
            8 => GgufValue::Str(self.string(key)?),
            9 => {
                if depth > 2 {
                    return Err(self.err(&format!("metadata {key}: arrays nested too deep")));
                }
                let item_ty = self.u32(key)?;
                let n = self.count(&format!("metadata {key} array length"), 1)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(item_ty, key, depth + 1)?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::U64(self.u64(key)?),
            11 => GgufValue::I64(self.u64(key)? as i64),
            12 => GgufValue::F64(f64::from_bits(self.u64(key)?)),
            t => return Err(self.err(&format!("metadata {key}: unknown value type {t}"))),
        })
    }
}

/// What a GGUF header holds.
type Header = (BTreeMap<String, GgufValue>, Vec<GgufTensorInfo>);

impl<'a> Gguf<'a> {
    /// Parses the header, metadata and tensor directory of `bytes`; `file` names the file
    /// in errors.
    pub fn parse(bytes: &'a [u8], file: &str) -> Result<Self> {
        let mut r = Reader { b: bytes, total: bytes.len(), pos: 0, file, short: false };
        let (metadata, tensors) = header(&mut r)?;
        Ok(Gguf { metadata, tensors, bytes: Bytes::Whole(bytes) })
    }

    /// Parses the file `name` of `reader` (`file` names it in errors) from a growing prefix:
    /// its header (a tokenizer's vocabulary takes megabytes) is held, its tensors are read
    /// when asked for.
    pub fn read(reader: &'a dyn ReadRange, name: &str, file: &str) -> Result<Self> {
        let total = reader.len(name)?;
        let total_usize = usize::try_from(total).map_err(|_| Error::bad_file(file, format!("is {total} bytes, more than this machine addresses")))?;
        let mut prefix = reader.read(name, 0, (8 << 20).min(total))?;
        loop {
            let mut r = Reader { b: &prefix, total: total_usize, pos: 0, file, short: false };
            match header(&mut r) {
                Ok((metadata, tensors)) => return Ok(Gguf { metadata, tensors, bytes: Bytes::Ranges { reader, name: name.to_string() } }),
                Err(_) if r.short => {
                    let have = prefix.len() as u64;
                    prefix.extend(reader.read(name, have, (have * 4).min(total))?);
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The bytes of `t`, one of this file's tensors.
    pub fn data(&self, t: &GgufTensorInfo) -> Result<Cow<'a, [u8]>> {
        match &self.bytes {
            Bytes::Whole(b) => Ok(Cow::Borrowed(&b[t.start..t.start + t.len])),
            Bytes::Ranges { reader, name } => Ok(Cow::Owned(reader.read(name, t.start as u64, (t.start + t.len) as u64)?)),
        }
    }
}

/// The header, metadata and tensor directory that `r` reads; every tensor is checked to lie
/// within the file.
fn header(r: &mut Reader) -> Result<Header> {
    let file = r.file;
    let magic = r.take(4, "magic")?;
    if magic != b"GGUF" {
        return Err(Error::bad_file(file, format!("not a GGUF file (magic {magic:?}, expected \"GGUF\")")));
    }
    let version = r.u32("version")?;
    if version != 3 && version != 2 {
        return Err(Error::unsupported(file, format!("GGUF version {version} is not supported (expected 3)")));
    }
    let n_tensors = r.count("tensor count", 24)?;
    let n_kv = r.count("metadata count", 12)?;
    let mut metadata = BTreeMap::new();
    for _ in 0..n_kv {
        let key = r.string("metadata key")?;
        let ty = r.u32(&key)?;
        let v = r.value(ty, &key, 0)?;
        metadata.insert(key, v);
    }
    let mut raw = Vec::with_capacity(n_tensors);
    for _ in 0..n_tensors {
        let name = r.string("tensor name")?;
        let n_dims = r.u32(&name)? as usize;
        if n_dims == 0 || n_dims > 4 {
            return Err(r.err(&format!("tensor {name}: {n_dims} dimensions, expected 1 to 4")));
        }
        let mut dims = Vec::with_capacity(n_dims);
        for _ in 0..n_dims {
            dims.push(r.u64(&name)?);
        }
        let ty = r.u32(&name)?;
        let offset = r.u64(&name)?;
        raw.push((name, dims, ty, offset));
    }
    let align = metadata.get("general.alignment").and_then(GgufValue::as_u64).unwrap_or(32).max(1) as usize;
    let data_start = r.pos.next_multiple_of(align);
    let mut tensors = Vec::with_capacity(raw.len());
    for (name, dims, ty_id, offset) in raw {
        let ty = GgmlType::from_id(ty_id).ok_or_else(|| {
            Error::bad_file(file, format!("tensor {name} has type {}, which Hearth does not read (supported: F32, F16, BF16, Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K)",
                ggml_type_name(ty_id)
            ))
        })?;
        let elements = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d)).filter(|&e| e < (1 << 40));
        let (block_elems, block_bytes) = ty.block();
        let len = elements
            .filter(|e| dims[0] % block_elems as u64 == 0 && e % block_elems as u64 == 0)
            .map(|e| e / block_elems as u64 * block_bytes as u64)
            .ok_or_else(|| Error::bad_file(file, format!("tensor {name} has impossible dimensions {dims:?} for {ty:?}")))?;
        let start = (data_start as u64).checked_add(offset);
        let fits = start.and_then(|s| s.checked_add(len)).is_some_and(|end| end <= r.total as u64);
        if !fits {
            return Err(Error::bad_file(file, format!("tensor {name} ({ty:?} {dims:?}) needs bytes {}..{} but the file has {} bytes (truncated?)",
                data_start as u64 + offset,
                data_start as u64 + offset + len,
                r.total
            )));
        }
        tensors.push(GgufTensorInfo {
            name,
            dims: dims.iter().map(|&d| d as usize).collect(),
            ty,
            start: start.unwrap() as usize,
            len: len as usize,
        });
    }
    Ok((metadata, tensors))
}
