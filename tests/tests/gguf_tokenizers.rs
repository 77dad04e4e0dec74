//! Tokenizers rebuilt from GGUF metadata, one per pre-tokenizer Hearth knows (gpt2, smollm,
//! llama-bpe, qwen2, gpt-4o), against HF `tokenizers` built as those families' tokenizer.json are,
//! and SentencePiece vocabularies with and without the dummy "▁" prefix (llama-spm: Llama 2,
//! Mistral, Phi-3; gemma-spm: Gemma) against the sentencepiece package itself
//! (tests/fixtures/gguf-tokenizers, made by tests/reference/gguf_tokenizers.py): the same
//! ids, exactly, for English, Chinese, code, whitespace runs, digits, contractions in
//! capitals, emoji (byte fallback) and a decomposed accent; the same decoded text.

use hearth_core::io::gguf::Gguf;
use hearth_core::model::Tokenizer;
use hearth_tests::fixture;
use serde_json::Value;

#[test]
fn gguf_tokenizers_match_hf() {
    let dir = fixture("gguf-tokenizers");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap();
    let fixtures = r.as_object().unwrap();
    assert_eq!(fixtures.len(), 7, "gpt2, smollm, llama-bpe, qwen2, gpt-4o, llama-spm, gemma-spm");
    for (pre, cases) in fixtures {
        let file = format!("{pre}.gguf");
        let bytes = std::fs::read(dir.join(&file)).unwrap();
        let g = Gguf::parse(&bytes, &file).unwrap();
        let tok = Tokenizer::from_gguf(&g, &file).unwrap();
        for case in cases.as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let want: Vec<u32> = case["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
            let got = tok.encode(text, true).unwrap();
            assert_eq!(got, want, "{pre}: ids of {text:?}");
            assert_eq!(tok.decode(&got, true).unwrap(), case["decoded"].as_str().unwrap(), "{pre}: decoding {text:?}");
        }
    }
}

#[test]
fn an_unknown_pre_tokenizer_is_named() {
    let dir = fixture("gguf-tokenizers");
    let mut bytes = std::fs::read(dir.join("qwen2.gguf")).unwrap();
    // same length, so the file stays valid: "qwen2" -> "qwen9"
    let at = bytes.windows(5).position(|w| w == b"qwen2").unwrap();
    bytes[at + 4] = b'9';
    let g = Gguf::parse(&bytes, "x.gguf").unwrap();
    let err = Tokenizer::from_gguf(&g, "x.gguf").err().unwrap().to_string();
    assert!(err.contains("x.gguf") && err.contains("\"qwen9\"") && err.contains("llama-bpe"), "{err}");
}
