//! The tokenizer.json that a GGUF file's tokenizer metadata describes, for HF's `tokenizers`:
//! - tokenizer.ggml.model "gpt2": byte-level BPE from tokens and merges, split as the
//!   pre-tokenizer that tokenizer.ggml.pre names (gpt2, smollm, llama-bpe, qwen2);
//! - "llama": SentencePiece BPE (Llama 2, TinyLlama, Mistral) from tokens and scores, as HF
//!   converts a tokenizer.model: "▁" for spaces, merges ordered by the merged piece's score,
//!   byte fallback to the <0xNN> tokens.
//!
//! Token types (tokenizer.ggml.token_type): 1 normal, 2 unknown, 3 control, 4 user-defined,
//! 5 unused, 6 byte.

use serde_json::{json, Map, Value};

use crate::io::gguf::{Gguf, GgufValue};
use crate::{Error, Result};

/// llama.cpp's token types, for reading and for writing GGUF vocabularies.
pub(crate) mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}
use token_type::{BYTE, CONTROL, NORMAL, UNKNOWN, USER_DEFINED};

/// The split patterns llama.cpp names in tokenizer.ggml.pre (llama-vocab.cpp), as HF writes them.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// GPT-4o's (o200k) split, Phi-4-mini's tokenizer: letters by case with the contraction as a
/// suffix, digits in threes, punctuation runs that take a trailing newline or slash.
const GPT4O_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The tokenizer.json for `g`'s metadata; `file` names it in errors.
pub fn tokenizer_json(g: &Gguf, file: &str) -> Result<Value> {
    match g.get("tokenizer.ggml.model").and_then(GgufValue::as_str).unwrap_or("(none)") {
        "gpt2" => byte_level_bpe(g, &Metadata::read(g, false, file)?, file),
        "llama" => sentencepiece_bpe(g, &Metadata::read(g, true, file)?, file),
        other => Err(Error::unsupported(file, format!("tokenizer model \"{other}\" is not supported from GGUF metadata (Hearth rebuilds \"gpt2\" byte-level BPE and \"llama\" SentencePiece); use the model's HF folder instead"))),
    }
}

/// What both kinds share: the tokens, their types and the BOS handling.
struct Metadata<'a> {
    tokens: Vec<&'a str>,
    types: Vec<i32>,
    /// The BOS token when tokenizer.ggml.add_bos_token asks for it in front of every text.
    add_bos: Option<usize>,
}

impl<'a> Metadata<'a> {
    /// `spm`: a SentencePiece vocabulary ("llama"), to which llama.cpp adds BOS by default.
    fn read(g: &'a Gguf, spm: bool, file: &str) -> Result<Self> {
        let tokens = strings(g, "tokenizer.ggml.tokens", file)?;
        let types: Vec<i32> = match g.get("tokenizer.ggml.token_type").and_then(GgufValue::as_array) {
            Some(a) => a.iter().map(|v| v.as_u64().and_then(|t| i32::try_from(t).ok()).unwrap_or(NORMAL)).collect(),
            None => vec![NORMAL; tokens.len()],
        };
        if types.len() != tokens.len() {
            return Err(Error::bad_file(file, format!("metadata tokenizer.ggml.token_type has {} entries for {} tokens",
                types.len(),
                tokens.len()
            )));
        }
        let add = g.get("tokenizer.ggml.add_bos_token").and_then(GgufValue::as_bool).unwrap_or(spm);
        let bos = g.get("tokenizer.ggml.bos_token_id").and_then(GgufValue::as_u64).map(|v| v as usize);
        Ok(Metadata { add_bos: bos.filter(|&b| add && b < tokens.len()), tokens, types })
    }

    fn vocab(&self) -> Map<String, Value> {
        self.tokens.iter().enumerate().map(|(i, t)| (t.to_string(), json!(i))).collect()
    }

    /// Control tokens are special (never split, skipped when decoding); user-defined ones are
    /// matched whole but decoded as text.
    fn added_tokens(&self) -> Vec<Value> {
        self.types
            .iter()
            .enumerate()
            .filter(|(_, &t)| t == CONTROL || t == USER_DEFINED)
            .map(|(i, &t)| json!({"id": i, "content": self.tokens[i], "single_word": false, "lstrip": false, "rstrip": false, "normalized": t == USER_DEFINED, "special": t == CONTROL}))
            .collect()
    }

    /// BOS in front of every encoding, as HF's `tokenizer(text)` does for these models.
    fn post_processor(&self) -> Value {
        let Some(b) = self.add_bos else { return Value::Null };
        let bos = self.tokens[b];
        json!({
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {bos: {"id": bos, "ids": [b], "tokens": [bos]}}
        })
    }
}

fn strings<'a>(g: &'a Gguf, key: &str, file: &str) -> Result<Vec<&'a str>> {
    g.get(key)
        .and_then(GgufValue::as_array)
        .ok_or_else(|| Error::bad_file(file, format!("metadata {key} is missing")))?
        .iter()
        .map(|v| v.as_str().ok_or_else(|| Error::bad_file(file, format!("metadata {key} holds a non-string"))))
        .collect()
}

/// The pre-tokenizers Hearth rebuilds, by llama.cpp's names (the GGUF export names a
/// tokenizer.json's by finding it here).
pub(crate) const KNOWN_PRE: [&str; 5] = ["gpt-2", "smollm", "llama-bpe", "qwen2", "gpt-4o"];

/// tokenizer.json's pre_tokenizer for llama.cpp's name `pre`.
pub(crate) fn pre_tokenizer(pre: &str, file: &str) -> Result<Value> {
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let split = |pattern: &str| json!({"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false});
    Ok(match pre {
        // llama.cpp's name is "gpt-2"; "gpt2" as files written before Hearth knew it
        "gpt-2" | "gpt2" | "default" => byte_level(true),
        "smollm" | "starcoder" | "refact" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
        "llama-bpe" | "llama3" | "smaug-bpe" => json!({"type": "Sequence", "pretokenizers": [split(LLAMA3_SPLIT), byte_level(false)]}),
        "qwen2" | "deepseek-r1-qwen" => json!({"type": "Sequence", "pretokenizers": [split(QWEN2_SPLIT), byte_level(false)]}),
        "gpt-4o" => json!({"type": "Sequence", "pretokenizers": [split(GPT4O_SPLIT), byte_level(false)]}),
        other => {
            return Err(Error::unsupported(
                file,
                format!("pre-tokenizer \"{other}\" (tokenizer.ggml.pre) is not supported; Hearth knows gpt-2, smollm, llama-bpe, qwen2 and gpt-4o"),
            ))
        }
    })
}

fn byte_level_bpe(g: &Gguf, meta: &Metadata, file: &str) -> Result<Value> {
    let merges = strings(g, "tokenizer.ggml.merges", file)?;
    let pre = g.get("tokenizer.ggml.pre").and_then(GgufValue::as_str).unwrap_or("default");
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": meta.added_tokens(),
        // Qwen2's tokenizer.json composes text (NFC) before splitting it
        "normalizer": if matches!(pre, "qwen2" | "deepseek-r1-qwen") { json!({"type": "NFC"}) } else { Value::Null },
        "pre_tokenizer": pre_tokenizer(pre, file)?,
        "post_processor": meta.post_processor(),
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  // Llama 3 takes a word that is in the vocabulary whole, before merging
                  "ignore_merges": matches!(pre, "llama-bpe" | "llama3" | "smaug-bpe"),
                  "vocab": meta.vocab(), "merges": merges}
    }))
}

fn sentencepiece_bpe(g: &Gguf, meta: &Metadata, file: &str) -> Result<Value> {
    let scores: Vec<f64> = g
        .get("tokenizer.ggml.scores")
        .and_then(GgufValue::as_array)
        .ok_or_else(|| Error::bad_file(file, "metadata tokenizer.ggml.scores is missing (a SentencePiece vocabulary needs it)"))?
        .iter()
        .map(|v| v.as_f64().unwrap_or(0.0))
        .collect();
    if scores.len() != meta.tokens.len() {
        return Err(Error::bad_file(file, format!("{} scores for {} tokens", scores.len(), meta.tokens.len())));
    }
    let unk = g
        .get("tokenizer.ggml.unknown_token_id")
        .and_then(GgufValue::as_u64)
        .map(|v| v as usize)
        .or_else(|| meta.types.iter().position(|&t| t == UNKNOWN))
        .filter(|&u| u < meta.tokens.len());
    let space_prefix = g.get("tokenizer.ggml.add_space_prefix").and_then(GgufValue::as_bool).unwrap_or(true);
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": meta.added_tokens(),
        // "▁" for every space and in front of the text (and of each piece between special
        // tokens), always: Metaspace's prepend skips a text that starts with a space, which
        // drops one of its leading spaces where SentencePiece keeps them all
        "normalizer": {"type": "Sequence", "normalizers": if space_prefix {
            vec![json!({"type": "Prepend", "prepend": "▁"}), json!({"type": "Replace", "pattern": {"String": " "}, "content": "▁"})]
        } else {
            vec![json!({"type": "Replace", "pattern": {"String": " "}, "content": "▁"})]
        }},
        "pre_tokenizer": null,
        "post_processor": meta.post_processor(),
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": if space_prefix { 1 } else { 0 }, "stop": 0}]},
        "model": {"type": "BPE", "dropout": null, "unk_token": unk.map(|u| meta.tokens[u]), "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                  "vocab": meta.vocab(), "merges": sentencepiece_merges(meta, &scores)}
    }))
}

/// SentencePiece BPE merges the adjacent pair whose joined piece scores highest; as HF's
/// converter does, every split of a normal piece into two pieces of the vocabulary becomes a
/// merge, ranked by the joined piece's score (ties: the longer left part, then the longer
/// right part, then vocabulary order).
fn sentencepiece_merges(meta: &Metadata, scores: &[f64]) -> Vec<Value> {
    let mergeable = |i: usize| !matches!(meta.types[i], CONTROL | BYTE | UNKNOWN);
    let ids: std::collections::HashMap<&str, usize> =
        meta.tokens.iter().enumerate().filter(|&(i, _)| mergeable(i)).map(|(i, &t)| (t, i)).collect();
    let mut merges: Vec<(f64, usize, usize, &str, &str)> = Vec::new();
    for (i, &piece) in meta.tokens.iter().enumerate() {
        if !mergeable(i) {
            continue;
        }
        let mut local: Vec<(usize, usize, &str, &str)> = piece
            .char_indices()
            .skip(1)
            .map(|(at, _)| piece.split_at(at))
            .filter_map(|(l, r)| Some((*ids.get(l)?, *ids.get(r)?, l, r)))
            .collect();
        local.sort();
        merges.extend(local.into_iter().map(|(_, _, l, r)| (scores[i], l.chars().count(), r.chars().count(), l, r)));
    }
    // stable: equal keys keep the order above
    merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)).then(b.2.cmp(&a.2)));
    merges.into_iter().map(|(_, _, _, l, r)| json!([l, r])).collect()
}
