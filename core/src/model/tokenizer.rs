//! The tokenizer: HF's `tokenizers` crate, built from tokenizer.json or rebuilt from GGUF
//! metadata (model/gguf_tokenizer.rs), plus the special ids and the chat template.

use serde_json::Value;

use crate::io::gguf::{Gguf, GgufValue};
use crate::{Error, Result};

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    pub bos_id: Option<u32>,
    pub eos_ids: Vec<u32>,
    pub pad_id: Option<u32>,
    pub bos_token: String,
    pub eos_token: String,
    /// Jinja source of the chat template, when the model has one.
    pub chat_template: Option<String>,
}

fn token_str(tok: &tokenizers::Tokenizer, id: Option<u32>) -> String {
    id.and_then(|i| tok.id_to_token(i)).unwrap_or_default()
}

impl Tokenizer {
    /// From tokenizer.json and, when present, tokenizer_config.json and generation_config.json.
    pub fn from_hf(tokenizer_json: &[u8], tokenizer_config: Option<&str>, generation_config: Option<&str>, folder: &str) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_bytes(tokenizer_json)
            .map_err(|e| Error::bad_file(format!("{folder}/tokenizer.json"), e.to_string()).with_boxed_source(e))?;
        let parse = |text: Option<&str>, name: &str| -> Result<Value> {
            match text {
                Some(t) => serde_json::from_str(t).map_err(|e| Error::bad_file(format!("{folder}/{name}"), e.to_string()).with_source(e)),
                None => Ok(Value::Null),
            }
        };
        let cfg = parse(tokenizer_config, "tokenizer_config.json")?;
        let gen = parse(generation_config, "generation_config.json")?;
        // special tokens are either strings or {"content": ...} objects
        let token_of = |key: &str| -> Option<String> {
            match cfg.get(key)? {
                Value::String(s) => Some(s.clone()),
                v => v.get("content")?.as_str().map(str::to_string),
            }
        };
        let id_of = |t: &Option<String>| t.as_ref().and_then(|t| inner.token_to_id(t));
        let ids = |v: Option<&Value>| -> Vec<u32> {
            match v {
                Some(Value::Number(n)) => n.as_u64().map(|i| vec![i as u32]).unwrap_or_default(),
                Some(Value::Array(a)) => a.iter().filter_map(|x| x.as_u64()).map(|i| i as u32).collect(),
                _ => vec![],
            }
        };
        let bos_token = token_of("bos_token");
        let eos_token = token_of("eos_token");
        let mut eos_ids = ids(gen.get("eos_token_id"));
        if let Some(id) = id_of(&eos_token) {
            if !eos_ids.contains(&id) {
                eos_ids.insert(0, id);
            }
        }
        let bos_id = id_of(&bos_token).or_else(|| ids(gen.get("bos_token_id")).first().copied());
        let chat_template = match cfg.get("chat_template") {
            Some(Value::String(s)) => Some(s.clone()),
            // a list of named templates: take "default"
            Some(Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .and_then(|t| t.get("template"))
                .and_then(Value::as_str)
                .map(str::to_string),
            _ => None,
        };
        Ok(Tokenizer {
            pad_id: id_of(&token_of("pad_token")),
            bos_token: bos_token.unwrap_or_default(),
            eos_token: eos_token.unwrap_or_else(|| token_str(&inner, eos_ids.first().copied())),
            bos_id,
            eos_ids,
            chat_template,
            inner,
        })
    }

    /// Rebuilds the tokenizer from GGUF metadata (byte-level BPE or SentencePiece).
    pub fn from_gguf(g: &Gguf, file: &str) -> Result<Self> {
        let json = super::gguf_tokenizer::tokenizer_json(g, file)?;
        let bytes = serde_json::to_vec(&json).expect("tokenizer json");
        let inner = tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| Error::bad_file(file, format!("tokenizer metadata: {e}")).with_boxed_source(e))?;
        let id = |k: &str| g.get(k).and_then(GgufValue::as_u64).map(|v| v as u32);
        let bos_id = id("tokenizer.ggml.bos_token_id");
        let eos_id = id("tokenizer.ggml.eos_token_id");
        let mut eos_ids: Vec<u32> = eos_id.into_iter().collect();
        if let Some(eot) = id("tokenizer.ggml.eot_token_id") {
            if !eos_ids.contains(&eot) {
                eos_ids.push(eot);
            }
        }
        Ok(Tokenizer {
            bos_token: token_str(&inner, bos_id),
            eos_token: token_str(&inner, eos_id),
            bos_id,
            eos_ids,
            pad_id: id("tokenizer.ggml.padding_token_id"),
            chat_template: g.get("tokenizer.chat_template").and_then(GgufValue::as_str).map(str::to_string),
            inner,
        })
    }

    /// The tokenizer as tokenizer.json text.
    pub fn to_json(&self) -> Result<String> {
        self.inner.to_string(true).map_err(|e| Error::bad_file("the tokenizer", format!("cannot be serialized: {e}")).with_boxed_source(e))
    }

    /// Token ids of `text`; `add_special` adds what HF's `tokenizer(text)` adds (a BOS for
    /// Llama 3, nothing for SmolLM2).
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        self.inner
            .encode(text, add_special)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| Error::bad_file("the tokenizer", format!("tokenizing failed: {e}")).with_boxed_source(e))
    }

    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner.decode(ids, skip_special).map_err(|e| Error::bad_file("the tokenizer", format!("detokenizing failed: {e}")).with_boxed_source(e))
    }

    pub fn token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn is_eos(&self, id: u32) -> bool {
        self.eos_ids.contains(&id)
    }
}
