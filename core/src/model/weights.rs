//! Host-side weights: every tensor of the decoder as a [`Matrix`] (f32 or a block format),
//! read by HF name from a [`TensorSource`] (safetensors shards or a GGUF file) and checked
//! against the config's shapes.

use crate::model::config::{Arch, Config};
use crate::quant::{QuantFormat, QuantTensor};
use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq)]
pub enum MatrixData {
    F32(Vec<f32>),
    Quant(QuantTensor),
}

impl MatrixData {
    /// A (rows, cols) bf16 tensor's bytes: as f32, or with `keep_16_bit` as f16 when its rows
    /// fit the f16 kernels' blocks and its values f16's range (bf16's 8-bit significand fits
    /// f16's 11, so only values below f16's normal range, 6.1e-5, round): half the memory.
    pub(crate) fn from_bf16(bytes: &[u8], rows: usize, cols: usize, keep_16_bit: bool) -> Result<Self> {
        let values = || bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32());
        let f16_rows = cols.is_multiple_of(QuantFormat::F16.block_size()) && rows > 0;
        // value by value: no f32 copy of a large embedding on the way
        if keep_16_bit && f16_rows && values().all(|x| x.abs() <= 65504.0) {
            let halves: Vec<u8> = values().flat_map(|x| half::f16::from_f32(x).to_le_bytes()).collect();
            return Ok(MatrixData::Quant(QuantTensor::from_blocks(QuantFormat::F16, rows, cols, halves)?));
        }
        Ok(MatrixData::F32(values().collect()))
    }
}

/// A (rows, cols) tensor in the nn.Linear layout; vectors are (1, n).
#[derive(Clone, Debug, PartialEq)]
pub struct Matrix {
    pub name: String,
    pub rows: usize,
    pub cols: usize,
    pub data: MatrixData,
}

/// A precision to hold the frozen linear weights in (`--quant`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightFormat {
    F32,
    Quant(QuantFormat),
}

impl WeightFormat {
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "f32" => WeightFormat::F32,
            "f16" => WeightFormat::Quant(QuantFormat::F16),
            "nf4" => WeightFormat::Quant(QuantFormat::Nf4),
            "q4_0" => WeightFormat::Quant(QuantFormat::Q4_0),
            "q4_1" => WeightFormat::Quant(QuantFormat::Q4_1),
            "q8_0" => WeightFormat::Quant(QuantFormat::Q8_0),
            other => return Err(Error::invalid_setting("quant", format!("unknown weight format \"{other}\" (expected f32, f16, nf4, q4_0, q4_1 or q8_0)"))),
        })
    }

    /// Bytes per weight, scales included.
    pub fn bytes_per_weight(self) -> f64 {
        match self {
            WeightFormat::F32 => 4.0,
            WeightFormat::Quant(QuantFormat::Nf4) => 0.5 + 1.0 / 64.0 + 4.0 / (64.0 * 256.0),
            WeightFormat::Quant(f) => f.block_bytes() as f64 / f.block_size() as f64,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            WeightFormat::F32 => "f32",
            WeightFormat::Quant(QuantFormat::F16) => "f16",
            WeightFormat::Quant(QuantFormat::Nf4) => "nf4",
            WeightFormat::Quant(QuantFormat::Q4_0) => "q4_0",
            WeightFormat::Quant(QuantFormat::Q4_1) => "q4_1",
            WeightFormat::Quant(QuantFormat::Q8_0) => "q8_0",
        }
    }
}

impl Matrix {
    pub fn format(&self) -> WeightFormat {
        match &self.data {
            MatrixData::F32(_) => WeightFormat::F32,
            MatrixData::Quant(q) => WeightFormat::Quant(q.format),
        }
    }

    pub fn to_f32(&self) -> Vec<f32> {
        match &self.data {
            MatrixData::F32(v) => v.clone(),
            MatrixData::Quant(q) => q.dequantize(),
        }
    }

    pub fn into_f32(self) -> Vec<f32> {
        match self.data {
            MatrixData::F32(v) => v,
            MatrixData::Quant(q) => q.dequantize(),
        }
    }

    /// Rows `ids` (each below `rows`) times `scale` in f32, handed one by one to `put` with
    /// their place in `ids`, as the bytes an upload takes: a lookup of token embeddings that
    /// copies each row once, straight into where it goes.
    pub fn gather_rows(&self, ids: &[u32], scale: f32, mut put: impl FnMut(usize, &[u8])) {
        let c = self.cols;
        let mut row = Vec::with_capacity(c);
        for (i, &id) in ids.iter().enumerate() {
            let r = id as usize;
            match &self.data {
                MatrixData::F32(v) if scale == 1.0 => {
                    put(i, bytemuck::cast_slice(&v[r * c..(r + 1) * c]));
                    continue;
                }
                MatrixData::F32(v) => row.extend_from_slice(&v[r * c..(r + 1) * c]),
                MatrixData::Quant(q) => q.dequantize_rows_into(r, r + 1, &mut row),
            }
            if scale != 1.0 {
                row.iter_mut().for_each(|x| *x *= scale);
            }
            put(i, bytemuck::cast_slice(&row));
            row.clear();
        }
    }

    /// Converts to `format` (dequantizing first when needed); a no-op when it already is.
    pub fn convert(self, format: WeightFormat) -> Result<Self> {
        if self.format() == format {
            return Ok(self);
        }
        let (name, rows, cols) = (self.name.clone(), self.rows, self.cols);
        let data = self.into_f32();
        let data = match format {
            WeightFormat::F32 => MatrixData::F32(data),
            WeightFormat::Quant(f) => MatrixData::Quant(
                QuantTensor::quantize(f, &data, rows, cols).map_err(|e| Error::Shape(format!("tensor {name}: {e}")))?,
            ),
        };
        Ok(Matrix { name, rows, cols, data })
    }

    /// Rows `start..end` as their own matrix (the lm_head is split this way when it is larger
    /// than one storage binding).
    pub fn rows_slice(&self, start: usize, end: usize) -> Result<Matrix> {
        let data = self.rows_data(start, end)?;
        Ok(Matrix { name: format!("{}[{start}..{end}]", self.name), rows: end - start, cols: self.cols, data })
    }

    /// The data of rows `start..end`: block formats keep their blocks (a row's blocks are
    /// contiguous); NF4 is quantized again because its absmax groups span rows.
    fn rows_data(&self, start: usize, end: usize) -> Result<MatrixData> {
        Ok(match &self.data {
            MatrixData::F32(v) => MatrixData::F32(v[start * self.cols..end * self.cols].to_vec()),
            MatrixData::Quant(q) if q.nf4.is_none() => {
                let row_bytes = self.cols / q.block_size * q.format.block_bytes();
                MatrixData::Quant(QuantTensor::from_blocks(q.format, end - start, self.cols, q.q[start * row_bytes..end * row_bytes].to_vec())?)
            }
            MatrixData::Quant(q) => {
                let mut dense = Vec::with_capacity((end - start) * self.cols);
                q.dequantize_rows_into(start, end, &mut dense);
                MatrixData::Quant(QuantTensor::quantize(q.format, &dense, end - start, self.cols)?)
            }
        })
    }
}

/// Where tensors come from: safetensors shards or a GGUF file, addressed by HF name.
pub trait TensorSource {
    /// The file (or folder) in error messages.
    fn origin(&self) -> &str;
    /// The tensor stored under the HF name `name`, or None when the file has no such tensor.
    fn tensor(&self, name: &str) -> Result<Option<Matrix>>;
    /// Whether Gemma's norm weights are stored as 1 + w (llama.cpp's GGUF) rather than w
    /// (transformers).
    fn norms_hold_one_plus_w(&self) -> bool {
        false
    }
}

#[derive(Clone, Debug)]
pub struct HostLayer {
    pub attn_norm: Vec<f32>, // (C)
    pub q: Matrix,           // (NH·HS, C)
    pub k: Matrix,           // (NKV·HS, C)
    pub v: Matrix,           // (NKV·HS, C)
    pub q_bias: Option<Vec<f32>>,
    pub k_bias: Option<Vec<f32>>,
    pub v_bias: Option<Vec<f32>>,
    /// (HS) each: Qwen3's per-head norms of q and k.
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
    pub o: Matrix,           // (C, NH·HS)
    pub ffn_norm: Vec<f32>,  // (C) before the MLP
    /// (C) each: Gemma 3's norms of the attention and MLP outputs.
    pub post_attn_norm: Option<Vec<f32>>,
    pub post_ffn_norm: Option<Vec<f32>>,
    pub gate: Matrix,        // (FF, C)
    pub up: Matrix,          // (FF, C)
    pub down: Matrix,        // (C, FF)
}

impl HostLayer {
    /// Phi-3's fused weights as its files hold them: (HF module, rows, data) of qkv_proj (q, k,
    /// v rows in that order) and gate_up_proj (gate, then up).
    pub fn fused_weights(&self) -> [(&'static str, usize, Vec<f32>); 2] {
        let fuse = |parts: &[&Matrix]| (parts.iter().map(|m| m.rows).sum(), parts.iter().flat_map(|m| m.to_f32()).collect());
        let (qkv_rows, qkv) = fuse(&[&self.q, &self.k, &self.v]);
        let (gate_up_rows, gate_up) = fuse(&[&self.gate, &self.up]);
        [("self_attn.qkv_proj", qkv_rows, qkv), ("mlp.gate_up_proj", gate_up_rows, gate_up)]
    }
}

#[derive(Clone, Debug)]
pub struct HostWeights {
    pub embed: Matrix,           // (V, C)
    pub lm_head: Option<Matrix>, // (V, C); None when tied to the embedding
    pub final_norm: Vec<f32>,    // (C)
    pub layers: Vec<HostLayer>,
}

impl HostWeights {
    /// The format the lm_head is uploaded in (the embedding's when they are tied; `--quant`
    /// converts the decoder layers' linear weights only).
    pub fn head_format(&self) -> WeightFormat {
        self.lm_head.as_ref().unwrap_or(&self.embed).format()
    }

    /// Reads every tensor the config names from `src`, checking shapes; converts the linear
    /// weights of the blocks to `quant` when given.
    pub fn load(cfg: &Config, src: &dyn TensorSource, quant: Option<WeightFormat>) -> Result<Self> {
        let r = WeightReader { cfg, src, quant };
        let layers = (0..cfg.n_layers).map(|i| r.layer(i)).collect::<Result<Vec<_>>>()?;
        Ok(HostWeights { embed: r.embed()?, lm_head: r.lm_head()?, final_norm: r.final_norm()?, layers })
    }
}

/// Reads a model's tensors from a [`TensorSource`] a layer at a time, checking shapes, and
/// converts the blocks' linear weights to `quant` when given: [`HostWeights::load`] keeps
/// them all, [`crate::model::Model::stream`] puts each layer on the GPU as it is read.
pub struct WeightReader<'a> {
    pub cfg: &'a Config,
    pub src: &'a dyn TensorSource,
    pub quant: Option<WeightFormat>,
}

impl WeightReader<'_> {
    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Matrix> {
        let src = self.src;
        let m = src.tensor(name)?.ok_or_else(|| Error::bad_file(src.origin(), format!("tensor {name} is missing (expected ({rows}, {cols}))")))?;
        if (m.rows, m.cols) != (rows, cols) {
            return Err(Error::Shape(format!("{}: tensor {name} has shape ({}, {}), the config expects ({rows}, {cols})", src.origin(), m.rows, m.cols)));
        }
        Ok(m)
    }

    fn vector(&self, name: &str, n: usize) -> Result<Vec<f32>> {
        let src = self.src;
        let m = src.tensor(name)?.ok_or_else(|| Error::bad_file(src.origin(), format!("tensor {name} is missing (expected ({n}))")))?;
        if m.rows * m.cols != n {
            return Err(Error::Shape(format!("{}: tensor {name} has {} values, the config expects {n}", src.origin(), m.rows * m.cols)));
        }
        Ok(m.into_f32())
    }

    /// Gemma's norms compute x·(1 + w): held as 1 + w, so that every norm runs as x·w.
    fn norm(&self, name: &str, n: usize) -> Result<Vec<f32>> {
        let w = self.vector(name, n)?;
        let one_plus = self.cfg.arch == Arch::Gemma3 && !self.src.norms_hold_one_plus_w();
        Ok(if one_plus { w.into_iter().map(|x| 1.0 + x).collect() } else { w })
    }

    fn convert(&self, m: Matrix) -> Result<Matrix> {
        match self.quant {
            Some(f) => m.convert(f),
            None => Ok(m),
        }
    }

    fn linear(&self, name: &str, rows: usize, cols: usize) -> Result<Matrix> {
        self.convert(self.matrix(name, rows, cols)?)
    }

    /// A fused weight (Phi-3's qkv_proj, gate_up_proj) cut into its parts by rows.
    fn split(&self, name: &str, parts: &[usize], cols: usize) -> Result<Vec<Matrix>> {
        let m = self.matrix(name, parts.iter().sum(), cols)?;
        let mut start = 0;
        parts
            .iter()
            .map(|&rows| {
                start += rows;
                self.convert(m.rows_slice(start - rows, start)?)
            })
            .collect()
    }

    /// The token embedding (V, C), in the file's format.
    pub fn embed(&self) -> Result<Matrix> {
        self.matrix("model.embed_tokens.weight", self.cfg.vocab_size, self.cfg.hidden_size)
    }

    /// The lm_head (V, C); None when tied to the embedding.
    pub fn lm_head(&self) -> Result<Option<Matrix>> {
        if self.cfg.tie_embeddings {
            return Ok(None);
        }
        self.matrix("lm_head.weight", self.cfg.vocab_size, self.cfg.hidden_size).map(Some)
    }

    pub fn final_norm(&self) -> Result<Vec<f32>> {
        self.norm("model.norm.weight", self.cfg.hidden_size)
    }

    /// Block `i`'s weights.
    pub fn layer(&self, i: usize) -> Result<HostLayer> {
        let cfg = self.cfg;
        let (c, ff) = (cfg.hidden_size, cfg.intermediate_size);
        let p = format!("model.layers.{i}");
        let bias = |proj: &str, n: usize| -> Result<Option<Vec<f32>>> {
            if cfg.qkv_bias {
                self.vector(&format!("{p}.self_attn.{proj}.bias"), n).map(Some)
            } else {
                Ok(None)
            }
        };
        let head_norm = |which: &str| -> Result<Option<Vec<f32>>> {
            if cfg.qk_norm {
                self.norm(&format!("{p}.self_attn.{which}.weight"), cfg.head_size).map(Some)
            } else {
                Ok(None)
            }
        };
        let post_norm = |which: &str| -> Result<Option<Vec<f32>>> {
            if cfg.post_norms {
                self.norm(&format!("{p}.{which}.weight"), c).map(Some)
            } else {
                Ok(None)
            }
        };
        let (q, k, v, gate, up) = if cfg.fused {
            let [q, k, v]: [Matrix; 3] = self.split(&format!("{p}.self_attn.qkv_proj.weight"), &[cfg.q_dim(), cfg.kv_dim(), cfg.kv_dim()], c)?.try_into().expect("3 parts");
            let [gate, up]: [Matrix; 2] = self.split(&format!("{p}.mlp.gate_up_proj.weight"), &[ff, ff], c)?.try_into().expect("2 parts");
            (q, k, v, gate, up)
        } else {
            (
                self.linear(&format!("{p}.self_attn.q_proj.weight"), cfg.q_dim(), c)?,
                self.linear(&format!("{p}.self_attn.k_proj.weight"), cfg.kv_dim(), c)?,
                self.linear(&format!("{p}.self_attn.v_proj.weight"), cfg.kv_dim(), c)?,
                self.linear(&format!("{p}.mlp.gate_proj.weight"), ff, c)?,
                self.linear(&format!("{p}.mlp.up_proj.weight"), ff, c)?,
            )
        };
        Ok(HostLayer {
            attn_norm: self.norm(&format!("{p}.input_layernorm.weight"), c)?,
            q,
            k,
            v,
            q_bias: bias("q_proj", cfg.q_dim())?,
            k_bias: bias("k_proj", cfg.kv_dim())?,
            v_bias: bias("v_proj", cfg.kv_dim())?,
            q_norm: head_norm("q_norm")?,
            k_norm: head_norm("k_norm")?,
            o: self.linear(&format!("{p}.self_attn.o_proj.weight"), c, cfg.q_dim())?,
            // Gemma's post_attention_layernorm is a post-norm; its MLP norm is pre_feedforward
            ffn_norm: self.norm(&format!("{p}.{}.weight", if cfg.post_norms { "pre_feedforward_layernorm" } else { "post_attention_layernorm" }), c)?,
            post_attn_norm: post_norm("post_attention_layernorm")?,
            post_ffn_norm: post_norm("post_feedforward_layernorm")?,
            gate,
            up,
            down: self.linear(&format!("{p}.mlp.down_proj.weight"), c, ff)?,
        })
    }
}
