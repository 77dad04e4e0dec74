//! safetensors shards as a [`TensorSource`]: f32 and bf16 tensors load as f32, f16 stays f16
//! (the f16 matmul reads it as is) when its rows fit the kernel's 8-value blocks. The shards
//! are either in memory ([`SafetensorsSource`]) or read a tensor at a time
//! ([`StreamedSafetensors`]: the web page, whose files stay in the browser's storage).

use safetensors::tensor::Metadata;
use safetensors::{Dtype, SafeTensors};

use super::ReadRange;
use crate::model::weights::{Matrix, MatrixData, TensorSource};
use crate::quant::{kquants, QuantFormat, QuantTensor};
use crate::{Error, Result};

pub struct SafetensorsSource<'a> {
    folder: String,
    shards: Vec<(String, SafeTensors<'a>)>,
}

impl<'a> SafetensorsSource<'a> {
    /// Parses each (file name, bytes) shard; the safetensors crate checks the header and that
    /// every tensor's byte range lies inside the file.
    pub fn new(folder: &str, files: &'a [(String, Vec<u8>)]) -> Result<Self> {
        let shards = files
            .iter()
            .map(|(name, bytes)| {
                SafeTensors::deserialize(bytes)
                    .map(|st| (name.clone(), st))
                    .map_err(|e| Error::bad_file(format!("{folder}/{name}"), format!("not a valid safetensors file ({e})")).with_source(e))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(SafetensorsSource { folder: folder.to_string(), shards })
    }
}

impl TensorSource for SafetensorsSource<'_> {
    fn origin(&self) -> &str {
        &self.folder
    }

    fn tensor(&self, name: &str) -> Result<Option<Matrix>> {
        for (file, st) in &self.shards {
            let Ok(view) = st.tensor(name) else { continue };
            return matrix(&self.folder, file, name, view.dtype(), view.shape(), view.data(), false).map(Some);
        }
        Ok(None)
    }
}

/// A tensor's bytes as a [`Matrix`]: f32 and bf16 as f32, f16 kept when its rows fit; with
/// `bf16_as_f16`, bf16 too becomes f16 where it can ([`MatrixData::from_bf16`]).
fn matrix(folder: &str, file: &str, name: &str, dtype: Dtype, shape: &[usize], bytes: &[u8], bf16_as_f16: bool) -> Result<Matrix> {
    let cols = shape.last().copied().unwrap_or(1);
    let rows = shape.iter().product::<usize>() / cols.max(1);
    let f16_rows = cols % QuantFormat::F16.block_size() == 0 && rows > 0;
    let data = match dtype {
        Dtype::F32 => MatrixData::F32(bytemuck::pod_collect_to_vec(bytes)),
        Dtype::BF16 => MatrixData::from_bf16(bytes, rows, cols, bf16_as_f16)?,
        Dtype::F16 if f16_rows => MatrixData::Quant(QuantTensor::from_blocks(QuantFormat::F16, rows, cols, bytes.to_vec())?),
        Dtype::F16 => MatrixData::F32(kquants::dequantize_f16(bytes)),
        other => return Err(Error::unsupported(format!("{folder}/{file}"), format!("tensor {name} has dtype {other:?}; Hearth reads F32, F16 and BF16"))),
    };
    Ok(Matrix { name: name.to_string(), rows, cols, data })
}

/// safetensors shards read one tensor at a time: only their headers are held, so the files
/// never sit in memory beside the weights made from them.
pub struct StreamedSafetensors<'a> {
    folder: String,
    reader: &'a dyn ReadRange,
    /// Each shard: its name, where its data starts, and its header.
    shards: Vec<(String, u64, Metadata)>,
    /// Keep bf16 weights in 16 bits, as f16 ([`MatrixData::from_bf16`]): half the memory of f32.
    bf16_as_f16: bool,
}

impl<'a> StreamedSafetensors<'a> {
    /// Reads and checks each shard's header: its length, its JSON, and that its tensors end
    /// where the file does (a truncated download is named here, not at its last tensor).
    pub fn new(folder: &str, names: &[String], reader: &'a dyn ReadRange, bf16_as_f16: bool) -> Result<Self> {
        let mut shards = Vec::new();
        for name in names {
            let bad = |why: String| Error::bad_file(format!("{folder}/{name}"), format!("not a valid safetensors file ({why})"));
            let len = reader.len(name)?;
            let n = u64::from_le_bytes(reader.read(name, 0, 8.min(len))?.try_into().map_err(|_| bad("shorter than its 8-byte header length".into()))?);
            if n > 100_000_000 || 8 + n > len {
                return Err(bad(format!("its header would be {n} bytes, in a file of {len}")));
            }
            let header = reader.read(name, 8, 8 + n)?;
            let meta: Metadata = serde_json::from_slice(&header).map_err(|e| bad(e.to_string()))?;
            let end = 8 + n + meta.data_len() as u64;
            if end != len {
                return Err(bad(format!("its tensors end at byte {end} but the file has {len}: truncated or padded")));
            }
            shards.push((name.clone(), 8 + n, meta));
        }
        Ok(StreamedSafetensors { folder: folder.to_string(), reader, shards, bf16_as_f16 })
    }
}

impl TensorSource for StreamedSafetensors<'_> {
    fn origin(&self) -> &str {
        &self.folder
    }

    fn tensor(&self, name: &str) -> Result<Option<Matrix>> {
        for (file, data_start, meta) in &self.shards {
            let Some(info) = meta.info(name) else { continue };
            let (start, end) = info.data_offsets;
            let bytes = self.reader.read(file, data_start + start as u64, data_start + end as u64)?;
            return matrix(&self.folder, file, name, info.dtype, &info.shape, &bytes, self.bf16_as_f16).map(Some);
        }
        Ok(None)
    }
}
