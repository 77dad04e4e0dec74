//! GGUF tensors by HF name: llama.cpp's names mapped back, its Q/K row permutation undone,
//! block formats Hearth runs kept as they are, the others dequantized to f32.

use super::gguf::{GgmlType, Gguf, GgufTensorInfo};
use crate::lora::Target;
use crate::model::config::{Arch, Config};
use crate::model::weights::{Matrix, MatrixData, TensorSource, WeightFormat};
use crate::quant::{kquants, QuantFormat, QuantTensor};
use crate::{Error, Result};

pub struct GgufSource<'a> {
    gguf: &'a Gguf<'a>,
    file: String,
    arch: Arch,
    n_heads: usize,
    n_kv_heads: usize,
    /// Keep bf16 weights in 16 bits, as f16 ([`MatrixData::from_bf16`]).
    bf16_as_f16: bool,
}

/// llama.cpp's tensor name for an HF name in a model of `arch`.
pub(crate) fn gguf_name(hf: &str, arch: Arch) -> Option<String> {
    let fixed = match hf {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (module, suffix) = rest.rsplit_once('.')?;
    let short = match module {
        "input_layernorm" => "attn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "self_attn.qkv_proj" => "attn_qkv",
        "mlp.gate_up_proj" => "ffn_up",
        "self_attn.q_norm" => "attn_q_norm",
        "self_attn.k_norm" => "attn_k_norm",
        // Gemma's post_attention_layernorm is a post-norm; its MLP norm is the pre_feedforward one
        "post_attention_layernorm" if arch == Arch::Gemma3 => "post_attention_norm",
        "post_attention_layernorm" => "ffn_norm",
        "pre_feedforward_layernorm" => "ffn_norm",
        "post_feedforward_layernorm" => "post_ffw_norm",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{layer}.{short}.{suffix}"))
}

/// Heads whose rows llama.cpp reorders in `target`'s output (q and k of the llama family).
pub(crate) fn permuted_heads(target: Target, cfg: &Config) -> Option<usize> {
    match target {
        Target::Q if cfg.arch.gguf_permutes_qk() => Some(cfg.n_heads),
        Target::K if cfg.arch.gguf_permutes_qk() => Some(cfg.n_kv_heads),
        _ => None,
    }
}

/// convert_hf_to_gguf.py's permute for llama-family q/k: within each head, HF row
/// j·HS/2 + i goes to row 2i + j (its rope pairs neighbouring dims; transformers pairs halves).
/// Rows move whole, so block formats stay intact.
pub(crate) fn permute_rows(bytes: &[u8], rows: usize, heads: usize) -> Vec<u8> {
    move_rows(bytes, rows, heads, true)
}

/// Undoes [`permute_rows`]: GGUF row 2i + j back to HF row j·HS/2 + i.
pub(crate) fn unpermute_rows(bytes: &[u8], rows: usize, heads: usize) -> Vec<u8> {
    move_rows(bytes, rows, heads, false)
}

fn move_rows(bytes: &[u8], rows: usize, heads: usize, to_gguf: bool) -> Vec<u8> {
    let row_bytes = bytes.len() / rows;
    let hs = rows / heads;
    let mut out = vec![0u8; bytes.len()];
    for h in 0..heads {
        for i in 0..hs / 2 {
            for j in 0..2 {
                let (hf, gguf) = (h * hs + j * (hs / 2) + i, h * hs + 2 * i + j);
                let (src, dst) = if to_gguf { (hf, gguf) } else { (gguf, hf) };
                out[dst * row_bytes..(dst + 1) * row_bytes].copy_from_slice(&bytes[src * row_bytes..(src + 1) * row_bytes]);
            }
        }
    }
    out
}

/// The format `tensor` has once loaded: GGUF's Q4_0, Q4_1, Q8_0 and F16 blocks are kept,
/// everything else becomes f32 (as `GgufSource::matrix` loads it).
pub fn format_on_load(tensor: &GgufTensorInfo) -> WeightFormat {
    let (_, cols) = tensor.rows_cols();
    match tensor.ty {
        GgmlType::Q4_0 => WeightFormat::Quant(QuantFormat::Q4_0),
        GgmlType::Q4_1 => WeightFormat::Quant(QuantFormat::Q4_1),
        GgmlType::Q8_0 => WeightFormat::Quant(QuantFormat::Q8_0),
        GgmlType::F16 if cols % QuantFormat::F16.block_size() == 0 => WeightFormat::Quant(QuantFormat::F16),
        _ => WeightFormat::F32,
    }
}

impl<'a> GgufSource<'a> {
    /// The tensors of `gguf` (`file` names it in errors), a model of `cfg`; bf16 ones stay
    /// 16-bit when `bf16_as_f16`.
    pub fn new(gguf: &'a Gguf<'a>, file: &str, cfg: &Config, bf16_as_f16: bool) -> Self {
        GgufSource { gguf, file: file.to_string(), arch: cfg.arch, n_heads: cfg.n_heads, n_kv_heads: cfg.n_kv_heads, bf16_as_f16 }
    }

    fn matrix(&self, hf_name: &str, info: &GgufTensorInfo, bytes: Vec<u8>) -> Result<Matrix> {
        let (rows, cols) = info.rows_cols();
        let bad = |e: Error| Error::bad_file(&self.file, format!("tensor {}: {e}", info.name));
        let quant = |f: QuantFormat, b: Vec<u8>| QuantTensor::from_blocks(f, rows, cols, b).map(MatrixData::Quant).map_err(bad);
        let dequant = |block: fn(&[u8], &mut [f32]), b: &[u8]| {
            let (n, bb) = info.ty.block();
            let mut out = vec![0f32; rows * cols];
            for (blk, y) in b.chunks_exact(bb).zip(out.chunks_exact_mut(n)) {
                block(blk, y);
            }
            MatrixData::F32(out)
        };
        let data = match info.ty {
            GgmlType::F32 => MatrixData::F32(bytemuck::pod_collect_to_vec(&bytes)),
            GgmlType::F16 if cols % QuantFormat::F16.block_size() == 0 => quant(QuantFormat::F16, bytes)?,
            GgmlType::F16 => MatrixData::F32(kquants::dequantize_f16(&bytes)),
            GgmlType::Bf16 => MatrixData::from_bf16(&bytes, rows, cols, self.bf16_as_f16).map_err(bad)?,
            GgmlType::Q4_0 => quant(QuantFormat::Q4_0, bytes)?,
            GgmlType::Q4_1 => quant(QuantFormat::Q4_1, bytes)?,
            GgmlType::Q8_0 => quant(QuantFormat::Q8_0, bytes)?,
            GgmlType::Q4K => dequant(kquants::dequantize_q4_k, &bytes),
            GgmlType::Q5K => dequant(kquants::dequantize_q5_k, &bytes),
            GgmlType::Q6K => dequant(kquants::dequantize_q6_k, &bytes),
        };
        Ok(Matrix { name: hf_name.to_string(), rows, cols, data })
    }
}

impl TensorSource for GgufSource<'_> {
    fn origin(&self) -> &str {
        &self.file
    }

    /// llama.cpp's converter adds 1 to Gemma's norm weights.
    fn norms_hold_one_plus_w(&self) -> bool {
        self.arch == Arch::Gemma3
    }

    fn tensor(&self, name: &str) -> Result<Option<Matrix>> {
        let Some(gname) = gguf_name(name, self.arch) else { return Ok(None) };
        let Some(info) = self.gguf.tensor(&gname) else { return Ok(None) };
        let mut bytes = self.gguf.data(info)?.into_owned();
        // llama.cpp permutes q and k (weights and biases) for the llama family only.
        if self.arch.gguf_permutes_qk() {
            let (rows, _) = info.rows_cols();
            let heads = if gname.contains(".attn_q.") {
                Some(self.n_heads)
            } else if gname.contains(".attn_k.") {
                Some(self.n_kv_heads)
            } else {
                None
            };
            if let Some(heads) = heads {
                // a bias is a vector: its elements move like the rows of the weight
                let n = if info.dims.len() == 1 { info.dims[0] } else { rows };
                bytes = unpermute_rows(&bytes, n, heads);
            }
        }
        self.matrix(name, info, bytes).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_llama_cpp() {
        assert_eq!(gguf_name("model.layers.12.self_attn.k_proj.bias", Arch::Llama).unwrap(), "blk.12.attn_k.bias");
        assert_eq!(gguf_name("model.layers.0.mlp.down_proj.weight", Arch::Llama).unwrap(), "blk.0.ffn_down.weight");
        assert_eq!(gguf_name("lm_head.weight", Arch::Llama).unwrap(), "output.weight");
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        // HF rows 0..8 for 2 heads of size 4; llama.cpp's permute: reshape(h, 2, hs/2) → swap → flatten.
        let (heads, hs) = (2, 4);
        let hf: Vec<u8> = (0..8).collect();
        let mut permuted = vec![0u8; 8];
        for h in 0..heads {
            for j in 0..2 {
                for i in 0..hs / 2 {
                    permuted[h * hs + 2 * i + j] = hf[h * hs + j * (hs / 2) + i];
                }
            }
        }
        assert_eq!(unpermute_rows(&permuted, 8, heads), hf);
    }
}
