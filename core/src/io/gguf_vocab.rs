//! tokenizer.ggml.* from a tokenizer.json, as llama.cpp's converter writes them:
//! - byte-level BPE ("gpt2": GPT-2, Llama 3, Qwen, SmolLM): tokens, types, merges and the
//!   pre-tokenizer by llama.cpp's name;
//! - SentencePiece-style BPE ("llama": Llama 2, Mistral, Gemma; BPE with byte fallback and
//!   "▁" for spaces): tokens, types and scores. llama.cpp's SentencePiece tokenizer merges the
//!   adjacent pair whose joined piece scores highest, so each piece scores by the rank of
//!   the first merge in tokenizer.json that makes it (earlier: higher), which orders merges
//!   as tokenizer.json does; pieces no merge makes score below all of them.
//!
//! Both with the special ids, add_bos_token and the chat template.

use serde_json::Value;

use super::gguf_write::{GgufWriter, MetaValue};
use crate::model::gguf_tokenizer::token_type::{BYTE, CONTROL, NORMAL, UNKNOWN, UNUSED, USER_DEFINED};
use crate::model::gguf_tokenizer::{pre_tokenizer, KNOWN_PRE};
use crate::model::{Config, Tokenizer};
use crate::{Error, Result};

fn refuse<T>(what: &str) -> Result<T> {
    Err(Error::unsupported("the tokenizer", format!("as GGUF: {what} (Hearth writes byte-level BPE and SentencePiece-style BPE tokenizers)")))
}

pub(crate) fn tokenizer_meta(g: &mut GgufWriter, tok: &Tokenizer, cfg: &Config) -> Result<()> {
    let json: Value = serde_json::from_str(&tok.to_json()?).map_err(|e| Error::bad_file("the tokenizer", e.to_string()).with_source(e))?;
    let model = &json["model"];
    if model["type"] != "BPE" {
        return refuse("a tokenizer that is not BPE");
    }
    let (mut tokens, mut types) = vocabulary(&json, cfg.vocab_size)?;
    let merges: Vec<String> = model["merges"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| match m {
            Value::String(s) => Some(s.clone()),
            Value::Array(p) => Some(p.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" ")),
            _ => None,
        })
        .collect();
    if model["byte_fallback"] == true {
        let space_prefix = sentencepiece_spaces(&json)?;
        let unk = model["unk_token"].as_str();
        for (t, ty) in tokens.iter().zip(types.iter_mut()) {
            if is_byte_piece(t) {
                *ty = BYTE;
            } else if Some(t.as_str()) == unk {
                *ty = UNKNOWN;
            }
        }
        let scores = merge_scores(&tokens, &types, &merges);
        g.set("tokenizer.ggml.model", MetaValue::Str("llama".into()));
        g.set("tokenizer.ggml.tokens", MetaValue::Strs(std::mem::take(&mut tokens)));
        g.set("tokenizer.ggml.scores", MetaValue::F32s(scores));
        g.set("tokenizer.ggml.token_type", MetaValue::I32s(std::mem::take(&mut types)));
        g.set("tokenizer.ggml.add_space_prefix", MetaValue::Bool(space_prefix));
        if let Some(u) = unk.and_then(|u| model["vocab"][u].as_u64()) {
            g.set("tokenizer.ggml.unknown_token_id", MetaValue::U32(u as u32));
        }
    } else {
        let pre = json.get("pre_tokenizer").cloned().unwrap_or(Value::Null);
        let canonical = |v: &Value| -> Option<Value> { serde_json::from_value::<tokenizers::pre_tokenizers::PreTokenizerWrapper>(v.clone()).ok().and_then(|p| serde_json::to_value(p).ok()) };
        let theirs = canonical(&pre);
        let Some(pre_name) = KNOWN_PRE.iter().find(|name| pre_tokenizer(name, "").ok().and_then(|v| canonical(&v)) == theirs && theirs.is_some()) else {
            return refuse("a pre-tokenizer llama.cpp has no name for here");
        };
        g.set("tokenizer.ggml.model", MetaValue::Str("gpt2".into()));
        g.set("tokenizer.ggml.pre", MetaValue::Str(pre_name.to_string()));
        g.set("tokenizer.ggml.tokens", MetaValue::Strs(tokens));
        g.set("tokenizer.ggml.token_type", MetaValue::I32s(types));
        g.set("tokenizer.ggml.merges", MetaValue::Strs(merges));
    }
    if let Some(b) = tok.bos_id {
        g.set("tokenizer.ggml.bos_token_id", MetaValue::U32(b));
    }
    if let Some(&e) = tok.eos_ids.first() {
        g.set("tokenizer.ggml.eos_token_id", MetaValue::U32(e));
    }
    if let Some(p) = tok.pad_id {
        g.set("tokenizer.ggml.padding_token_id", MetaValue::U32(p));
    }
    // whether the tokenizer puts BOS in front of a text, as `tokenizer(text)` does
    let adds_bos = tok.bos_id.is_some() && tok.encode("a", true)?.first() == tok.bos_id.as_ref();
    g.set("tokenizer.ggml.add_bos_token", MetaValue::Bool(adds_bos));
    if let Some(t) = &tok.chat_template {
        g.set("tokenizer.chat_template", MetaValue::Str(t.clone()));
    }
    Ok(())
}

/// Tokens by id and their types (added tokens: control when special, else user-defined),
/// `vocab_size` long: ids the vocabulary leaves out (a padded embedding) are filled as
/// llama.cpp's converter fills them.
fn vocabulary(json: &Value, vocab_size: usize) -> Result<(Vec<String>, Vec<i32>)> {
    let vocab = json["model"]["vocab"].as_object().ok_or_else(|| Error::bad_file("the tokenizer", "no model.vocab"))?;
    let n = vocab_size.max(vocab.len());
    let mut tokens = vec![String::new(); n];
    let mut types = vec![NORMAL; n];
    for (t, id) in vocab {
        if let Some(i) = id.as_u64().map(|i| i as usize).filter(|&i| i < n) {
            tokens[i] = t.clone();
        }
    }
    for a in json["added_tokens"].as_array().into_iter().flatten() {
        if let (Some(i), Some(t)) = (a["id"].as_u64().map(|i| i as usize).filter(|&i| i < n), a["content"].as_str()) {
            tokens[i] = t.to_string();
            types[i] = if a["special"] == true { CONTROL } else { USER_DEFINED };
        }
    }
    for (i, t) in tokens.iter_mut().enumerate().filter(|(_, t)| t.is_empty()) {
        *t = format!("[PAD{i}]");
        types[i] = UNUSED;
    }
    Ok((tokens, types))
}

/// `<0xAB>`: a byte-fallback piece.
fn is_byte_piece(t: &str) -> bool {
    t.len() == 6 && t.starts_with("<0x") && t.ends_with('>') && t[3..5].chars().all(|c| c.is_ascii_hexdigit())
}

/// Whether "▁" goes in front of the text (add_space_prefix), for a tokenizer that writes
/// spaces as "▁" without splitting on them, as SentencePiece does: Metaspace (not split), or
/// a normalizer that replaces spaces (and may prepend "▁"). Anything else is refused.
fn sentencepiece_spaces(json: &Value) -> Result<bool> {
    let pre = &json["pre_tokenizer"];
    if pre["type"] == "Metaspace" {
        if pre["replacement"] != "▁" || pre["split"] == true {
            return refuse("a Metaspace pre-tokenizer that splits on spaces or writes them other than as \"▁\"");
        }
        return Ok(matches!(pre["prepend_scheme"].as_str(), Some("first" | "always")) || pre["add_prefix_space"] == true);
    }
    if !pre.is_null() {
        return refuse("a byte-fallback BPE with a pre-tokenizer SentencePiece does not have");
    }
    let norm = &json["normalizer"];
    let steps: Vec<&Value> = match norm["type"].as_str() {
        Some("Sequence") => norm["normalizers"].as_array().map(|v| v.iter().collect()).unwrap_or_default(),
        Some(_) => vec![norm],
        None => vec![],
    };
    let replaces = steps.iter().any(|s| s["type"] == "Replace" && s["pattern"]["String"] == " " && s["content"] == "▁");
    if !replaces {
        return refuse("a byte-fallback BPE that does not write spaces as \"▁\"");
    }
    Ok(steps.iter().any(|s| s["type"] == "Prepend" && s["prepend"] == "▁"))
}

/// Each piece's score: minus the rank of the first merge that makes it, for pieces merges
/// make; 0 for bytes, control and unknown tokens (as in SentencePiece's own files); below
/// every merge for the rest (single characters, pieces no merge makes).
fn merge_scores(tokens: &[String], types: &[i32], merges: &[String]) -> Vec<f32> {
    let mut rank = std::collections::HashMap::new();
    for (i, m) in merges.iter().enumerate() {
        if let Some((l, r)) = m.split_once(' ') {
            rank.entry(format!("{l}{r}")).or_insert(i);
        }
    }
    let last = -(merges.len() as f32) - 1.0;
    tokens
        .iter()
        .zip(types)
        .map(|(t, &ty)| match ty {
            BYTE | CONTROL | UNKNOWN => 0.0,
            _ => rank.get(t).map_or(last, |&r| -(r as f32) - 1.0),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_rank_pieces_by_their_first_merge() {
        let tokens: Vec<String> = ["<unk>", "<0x0A>", "a", "b", "ab", "abb", "zz"].iter().map(|s| s.to_string()).collect();
        let types = vec![UNKNOWN, BYTE, NORMAL, NORMAL, NORMAL, NORMAL, NORMAL];
        let merges: Vec<String> = ["a b", "ab b", "a bb"].iter().map(|s| s.to_string()).collect();
        assert_eq!(merge_scores(&tokens, &types, &merges), vec![0.0, 0.0, -4.0, -4.0, -1.0, -2.0, -4.0]);
        assert!(is_byte_piece("<0x0A>") && !is_byte_piece("<0xZZ>") && !is_byte_piece("<s>"));
    }
}
