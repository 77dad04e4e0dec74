//! Generation: prefill the prompt, then decode one token at a time through the KV cache,
//! streaming text as it comes, until EOS, a stop string or max_new_tokens.

use crate::model::forward::Model;
use crate::model::gpu_picks::decode_on_gpu;
use crate::model::sampling::{Sampler, SamplingParams};
use crate::ops::sample::TokenPick;
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
    if model.decodes_ahead(ctx) {
        let mut decoding = Decoding::run_prompt(ctx, model, prompt, params)?;
        let first = decoding.pick();
        decode_on_gpu(ctx, model, first, params.max_new_tokens, |id| Ok(decoding.accept(tok, id, &mut on_text)?.is_some())).await?;
        return decoding.finish(tok, &mut on_text);
    }
    // a token at a time: each read before it runs
    let (mut decoding, mut next) = Decoding::start(ctx, model, tok, prompt, params, &mut on_text).await?;
    while let Some(id) = next {
        model.run(ctx, &[id])?;
        next = decoding.take_next(ctx, model, tok, &mut on_text).await?;
    }
    decoding.finish(tok, &mut on_text)
}

/// One sequence's generation, a token at a time: sampling, end-of-sequence, stop strings,
/// max_new_tokens and the text streamed so far. [`generate_until`] runs one; a server runs
/// several, each fed the logits of its row of a batched decode.
pub struct Decoding {
    params: GenerateParams,
    sampler: Sampler,
    seen: Vec<u32>,
    ids: Vec<u32>,
    text: String,
    stop: StopReason,
}

impl Decoding {
    /// Runs `prompt` into the model's cache (keeping what it shares with the cache when
    /// `params.reuse_cache`) and returns the decoding with the logits of its first token.
    pub async fn prefill(ctx: &GpuContext, model: &mut Model, prompt: &[u32], params: &GenerateParams) -> Result<(Self, Vec<f32>)> {
        let decoding = Self::run_prompt(ctx, model, prompt, params)?;
        Ok((decoding, model.read_logits(ctx).await?))
    }

    /// Runs `prompt` as [`Decoding::prefill`] does and takes its first new token as
    /// [`Decoding::take_next`] does: the token to run next, or None where the generation has
    /// already ended (then [`Decoding::finish`]).
    pub async fn start(ctx: &GpuContext, model: &mut Model, tok: &Tokenizer, prompt: &[u32], params: &GenerateParams, on_text: &mut impl FnMut(&str) -> bool) -> Result<(Self, Option<u32>)> {
        let mut decoding = Self::run_prompt(ctx, model, prompt, params)?;
        let next = decoding.take_next(ctx, model, tok, on_text).await?;
        Ok((decoding, next))
    }

    /// Takes the next token after the one the model last ran, its text streamed to `on_text`:
    /// picked on the GPU where the context lets it (only the token is read back), else sampled
    /// from the logits read. Returns the token to run next, or None where the generation has
    /// ended.
    async fn take_next(&mut self, ctx: &GpuContext, model: &mut Model, tok: &Tokenizer, on_text: &mut impl FnMut(&str) -> bool) -> Result<Option<u32>> {
        if ctx.decode_ahead() {
            let id = model.pick_now(ctx, self.pick()).await?;
            self.accept(tok, id, on_text)
        } else {
            self.next(tok, &mut model.read_logits(ctx).await?, on_text)
        }
    }

    /// [`Decoding::prefill`] without reading the logits: they stay on the GPU.
    fn run_prompt(ctx: &GpuContext, model: &mut Model, prompt: &[u32], params: &GenerateParams) -> Result<Self> {
        if prompt.is_empty() {
            return Err(Error::Shape("the prompt is empty: give at least one token".into()));
        }
        // at least the last prompt token runs, for the logits of the first new one
        let keep = if params.reuse_cache { model.cached_prefix(prompt).min(prompt.len() - 1) } else { 0 };
        model.rewind(keep);
        model.run(ctx, &prompt[keep..])?;
        Ok(Decoding {
            params: params.clone(),
            sampler: Sampler::new(params.sampling.clone()),
            seen: prompt.to_vec(),
            ids: Vec::new(),
            text: String::new(),
            stop: StopReason::MaxTokens,
        })
    }

    /// Samples the next token from `logits` and streams the new text to `on_text`; returns
    /// the token to run next, or None when the generation has ended (then [`Decoding::finish`]).
    pub fn next(&mut self, tok: &Tokenizer, logits: &mut [f32], on_text: &mut impl FnMut(&str) -> bool) -> Result<Option<u32>> {
        let id = self.sampler.sample(logits, &self.seen, self.draws());
        self.accept(tok, id, on_text)
    }

    /// How its next token is picked, for the GPU (from the logits where they are;
    /// [`Decoding::accept`] then takes it): its sampler's next draw.
    pub fn pick(&self) -> TokenPick {
        self.sampler.pick(self.draws())
    }

    /// How many more tokens it may take (the last of them ends it).
    pub fn left(&self) -> usize {
        self.params.max_new_tokens.saturating_sub(self.ids.len())
    }

    /// The tokens drawn so far (each draw's noise is its own): those taken, since a draw that
    /// is not taken ends the generation.
    fn draws(&self) -> u32 {
        self.ids.len() as u32
    }

    /// Takes `id` as the next token (sampled, or picked on the GPU as [`Decoding::pick`] says)
    /// and streams the new text to `on_text`; returns the token to run next, or None when the
    /// generation has ended.
    pub fn accept(&mut self, tok: &Tokenizer, id: u32, on_text: &mut impl FnMut(&str) -> bool) -> Result<Option<u32>> {
        if self.ids.len() >= self.params.max_new_tokens {
            return Ok(None);
        }
        if tok.is_eos(id) {
            self.stop = StopReason::Eos;
            return Ok(None);
        }
        self.ids.push(id);
        self.seen.push(id);
        // decode everything so far and emit what is new, holding back a split UTF-8 char
        let full = tok.decode(&self.ids, true)?;
        if let Some(pos) = self.params.stop_strings.iter().filter_map(|s| full.find(s.as_str())).min() {
            if pos > self.text.len() {
                on_text(&full[self.text.len()..pos]);
            }
            self.text = full[..pos].to_string();
            self.stop = StopReason::StopString;
            return Ok(None);
        }
        // hold back what could be the start of a stop string, so streamed text never
        // holds a piece of one
        let safe = full.len() - stop_prefix_len(&full, &self.params.stop_strings);
        if !full[..safe].ends_with('\u{FFFD}') && safe > self.text.len() && full.starts_with(&self.text) {
            let go_on = on_text(&full[self.text.len()..safe]);
            self.text = full[..safe].to_string();
            if !go_on {
                self.stop = StopReason::Cancelled;
                return Ok(None);
            }
        }
        Ok((self.ids.len() < self.params.max_new_tokens).then_some(id))
    }

    /// The generation, once [`Decoding::next`] has returned None: the text held back so far
    /// goes to `on_text`.
    pub fn finish(mut self, tok: &Tokenizer, on_text: &mut impl FnMut(&str) -> bool) -> Result<Generation> {
        if self.stop != StopReason::StopString && self.stop != StopReason::Cancelled {
            let full = tok.decode(&self.ids, true)?;
            if full.len() > self.text.len() && full.starts_with(&self.text) {
                on_text(&full[self.text.len()..]);
            }
            self.text = full;
        }
        Ok(Generation { ids: self.ids, text: self.text, stop: self.stop })
    }
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
