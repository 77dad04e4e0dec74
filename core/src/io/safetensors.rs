//! safetensors shards as a [`TensorSource`]: f32 and bf16 tensors load as f32, f16 stays f16
//! (the f16 matmul reads it as is) when its rows fit the kernel's 8-value blocks.

use safetensors::{Dtype, SafeTensors};

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
            let shape = view.shape();
            let cols = shape.last().copied().unwrap_or(1);
            let rows = shape.iter().product::<usize>() / cols.max(1);
            let bytes = view.data();
            let data = match view.dtype() {
                Dtype::F32 => MatrixData::F32(bytemuck::pod_collect_to_vec(bytes)),
                Dtype::BF16 => MatrixData::F32(kquants::dequantize_bf16(bytes)),
                Dtype::F16 if cols % QuantFormat::F16.block_size() == 0 && rows > 0 => {
                    MatrixData::Quant(QuantTensor::from_blocks(QuantFormat::F16, rows, cols, bytes.to_vec())?)
                }
                Dtype::F16 => MatrixData::F32(kquants::dequantize_f16(bytes)),
                other => {
                    return Err(Error::unsupported(
                        format!("{}/{file}", self.folder),
                        format!("tensor {name} has dtype {other:?}; Hearth reads F32, F16 and BF16"),
                    ))
                }
            };
            return Ok(Some(Matrix { name: name.to_string(), rows, cols, data }));
        }
        Ok(None)
    }
}
