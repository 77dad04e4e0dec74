//! Generation: prefill the prompt, then decode one token at a time through the KV cache,
//! streaming text as it comes, until EOS, a stop string or max_new_tokens.

use crate::model::forward::Model;
use crate::model::sampling::{Sampler, SamplingParams};
use crate::model::tokenizer::Tokenizer;
use crate::{Error, GpuContext, Result};

#[derive(Clone, Debug)]
pub struct GenerateParams {
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    /// Generation stops when the text contains one of these (it is cut before it).
    pub stop_strings: Vec<String>,
    /// Keep the part of the KV cache that the prompt shares with what the model last ran
    /// (a chat's earlier turns) instead of starting empty. Only while the weights and the
    /// adapter are the ones that filled the cache.
    pub reuse_cache: bool,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams { max_new_tokens: 128, sampling: SamplingParams::default(), stop_strings: vec![], reuse_cache: false }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum StopReason {
    Eos,
    StopString,
    MaxTokens,
    /// `on_text` asked to stop (a server's client went away).
    Cancelled,
}

#[derive(Clone, Debug)]
pub struct Generation {
    pub ids: Vec<u32>,
    pub text: String,
    pub stop: StopReason,
}

/// Generates after `prompt` (token ids), from an empty cache unless `params.reuse_cache`;
/// `on_text` receives each new piece of text as it is decoded.
pub async fn generate(
    ctx: &GpuContext,
    model: &mut Model,
    tok: &Tokenizer,
    prompt: &[u32],
    params: &GenerateParams,
    mut on_text: impl FnMut(&str),
) -> Result<Generation> {
    generate_until(ctx, model, tok, prompt, params, |piece| {
        on_text(piece);
        true
    })
    .await
}

/// [`generate`], stopping early ([`StopReason::Cancelled`]) when `on_text` returns false.
pub async fn generate_until(
    ctx: &GpuContext,
    model: &mut Model,
    tok: &Tokenizer,
    prompt: &[u32],
    params: &GenerateParams,
    mut on_text: impl FnMut(&str) -> bool,
) -> Result<Generation> {
    if prompt.is_empty() {
        return Err(Error::Shape("the prompt is empty: give at least one token".into()));
    }
    // at least the last prompt token runs, for the logits of the first new one
    let keep = if params.reuse_cache { model.cached_prefix(prompt).min(prompt.len() - 1) } else { 0 };
    model.rewind(keep);
    let mut sampler = Sampler::new(params.sampling.clone());
    let mut seen: Vec<u32> = prompt.to_vec();
    let mut ids = Vec::new();
    let mut text = String::new();
    let mut stop = StopReason::MaxTokens;
    let mut logits = model.forward(ctx, &prompt[keep..]).await?;
    for step in 0..params.max_new_tokens {
        let id = sampler.sample(&mut logits, &seen);
        if tok.is_eos(id) {
            stop = StopReason::Eos;
            break;
        }
        ids.push(id);
        seen.push(id);
        // decode everything so far and emit what is new, holding back a split UTF-8 char
        let full = tok.decode(&ids, true)?;
        if let Some(pos) = params.stop_strings.iter().filter_map(|s| full.find(s.as_str())).min() {
            if pos > text.len() {
                on_text(&full[text.len()..pos]);
            }
            text = full[..pos].to_string();
            stop = StopReason::StopString;
            break;
        }
        // hold back what could be the start of a stop string, so streamed text never
        // holds a piece of one
        let safe = full.len() - stop_prefix_len(&full, &params.stop_strings);
        if !full[..safe].ends_with('\u{FFFD}') && safe > text.len() && full.starts_with(&text) {
            let go_on = on_text(&full[text.len()..safe]);
            text = full[..safe].to_string();
            if !go_on {
                stop = StopReason::Cancelled;
                break;
            }
        }
        if step + 1 == params.max_new_tokens {
            break;
        }
        logits = model.forward(ctx, &[id]).await?;
    }
    if stop != StopReason::StopString && stop != StopReason::Cancelled {
        let full = tok.decode(&ids, true)?;
        if full.len() > text.len() && full.starts_with(&text) {
            on_text(&full[text.len()..]);
        }
        text = full;
    }
    Ok(Generation { ids, text, stop })
}

/// The length of the longest end of `text` that begins one of `stops` (0: none does).
fn stop_prefix_len(text: &str, stops: &[String]) -> usize {
    stops
        .iter()
        .flat_map(|s| (1..s.len()).filter(|&k| s.is_char_boundary(k) && text.ends_with(&s[..k])))
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::stop_prefix_len;

    #[test]
    fn holds_back_the_start_of_a_stop_string() {
        let stops = vec!["\nUser:".to_string(), "ß!".to_string()];
        assert_eq!(stop_prefix_len("Hello\nUs", &stops), 3);
        assert_eq!(stop_prefix_len("Hello\n", &stops), 1);
        assert_eq!(stop_prefix_len("Hello", &stops), 0);
        assert_eq!(stop_prefix_len("Straße", &stops), 0);
        assert_eq!(stop_prefix_len("Straß", &stops), "ß".len());
    }
}
