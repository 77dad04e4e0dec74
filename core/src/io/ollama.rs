//! Ollama's Modelfile for an exported GGUF: FROM (and ADAPTER), the chat template in
//! Ollama's Go-template syntax, the default system prompt, stop strings and the context.
//!
//! The Jinja template cannot be translated in general, so it is measured instead: rendered
//! for marker conversations, it is cut into what comes before and after each role's content
//! (a [`TurnFormat`]). That format is then checked against the Jinja template on other
//! conversations, as Ollama would fill it in (its default system prompt, the generation
//! prompt after a user turn); a template it does not reproduce exactly is refused, naming
//! why, rather than written wrong.

use crate::model::chat::{render_dated, Message};
use crate::model::Tokenizer;
use crate::{Error, Result};

const SYSTEM: usize = 0;
const USER: usize = 1;
const ASSISTANT: usize = 2;

/// A chat format as turns: `prefix`, then per message `heads[role] + content + tails[role]`,
/// and `generation` after the last user turn (the last assistant turn, a prefill, has no
/// tail). `folded_system`: the template has no system turn and puts the system prompt in
/// front of the next user message with this separator (Gemma).
#[derive(Clone, Debug, PartialEq)]
pub struct TurnFormat {
    pub prefix: String,
    pub heads: [String; 3],
    pub tails: [String; 3],
    pub generation: String,
    /// The system prompt the template writes when the conversation has none (SmolLM2, Qwen2.5).
    pub default_system: Option<String>,
    pub folded_system: Option<String>,
}

const MARKS: [&str; 4] = ["XSYSTEMX", "XUSERONEX", "XASSISTANTX", "XUSERTWOX"];
const DATES: [(i64, u32, u32); 2] = [(2026, 1, 2), (2027, 11, 29)];

fn msgs(turns: &[(&str, &str)]) -> Vec<Message> {
    turns.iter().map(|(r, c)| Message::new(r, c)).collect()
}

fn unsupported(why: impl std::fmt::Display) -> Error {
    Error::unsupported("the chat template", format!("cannot be written as an Ollama TEMPLATE ({why}); write the Modelfile's TEMPLATE by hand"))
}

/// `text` cut at each of `marks`, which must each occur once, in order: the len + 1 pieces.
fn split_at_marks(text: &str, marks: &[&str]) -> Option<Vec<String>> {
    let mut pieces = Vec::new();
    let mut rest = text;
    for m in marks {
        let (before, after) = rest.split_once(m)?;
        if after.contains(m) {
            return None;
        }
        pieces.push(before.to_string());
        rest = after;
    }
    pieces.push(rest.to_string());
    Some(pieces)
}

/// User and assistant turns, measured on user, assistant, user (after a system message
/// when `with_system`).
struct Turns {
    /// What comes before the first user turn's head.
    before: String,
    head_u: String,
    head_a: String,
    tail_u: String,
    tail_a: String,
    generation: String,
}

impl Turns {
    fn measure(r: &Renderer, with_system: bool) -> Result<Turns> {
        let [s, u1, a, u2] = MARKS;
        let mut turns = vec![("user", u1), ("assistant", a), ("user", u2)];
        if with_system {
            turns.insert(0, ("system", s));
        }
        let full = r.marked(&turns, false)?;
        let p = split_at_marks(&full, &MARKS[MARKS.len() - 3..]).ok_or_else(|| unsupported("the messages do not appear once each, in order"))?;
        let pair = r.marked(&[("user", u1), ("assistant", a)], false)?;
        let after_a = pair.rsplit_once(a).map(|(_, t)| t).ok_or_else(|| unsupported("an assistant message does not appear"))?;
        // what a conversation ends with when no generation prompt follows (Phi-3: EOS)
        let eos = r.eos;
        let closing = if !eos.is_empty() && p[3].ends_with(eos) && after_a.ends_with(eos) { eos } else { "" };
        let tail_u = p[3][..p[3].len() - closing.len()].to_string();
        let tail_a = after_a[..after_a.len() - closing.len()].to_string();
        let body = &full[..full.len() - closing.len()];
        let generation = r.marked(&turns, true)?.strip_prefix(body).map(str::to_string).ok_or_else(|| unsupported("the generation prompt is not added at the end"))?;
        let head_a = p[1].strip_prefix(tail_u.as_str()).ok_or_else(|| unsupported("the user turns do not end alike"))?.to_string();
        let head_u = p[2].strip_prefix(tail_a.as_str()).ok_or_else(|| unsupported("the assistant turns do not end alike"))?.to_string();
        let before = if with_system { String::new() } else { p[0].clone() };
        Ok(Turns { before, head_u, head_a, tail_u, tail_a, generation })
    }
}

struct Renderer<'a> {
    template: &'a str,
    bos: &'a str,
    eos: &'a str,
}

impl Renderer<'_> {
    fn render(&self, turns: &[Message], generation: bool, date: (i64, u32, u32)) -> Result<String> {
        render_dated(self.template, turns, generation, self.bos, self.eos, None, date)
    }

    fn marked(&self, turns: &[(&str, &str)], generation: bool) -> Result<String> {
        self.render(&msgs(turns), generation, DATES[0])
    }
}

impl TurnFormat {
    /// Measures the Jinja `template` (with the tokenizer's BOS and EOS text) and checks the
    /// result on other conversations.
    pub fn measure(template: &str, bos: &str, eos: &str) -> Result<TurnFormat> {
        let r = Renderer { template, bos, eos };
        let [s, u1, a, u2] = MARKS;
        let turns = msgs(&[("system", s), ("user", u1), ("assistant", a), ("user", u2)]);
        let full = r.render(&turns, false, DATES[0])?;
        if r.render(&turns, false, DATES[1])? != full {
            return Err(unsupported("it writes today's date"));
        }
        let p = split_at_marks(&full, &MARKS).ok_or_else(|| unsupported("the messages do not appear once each, in order"))?;
        // Gemma: the system prompt goes in front of the first user message
        let folded = r.marked(&[("user", &format!("{s}{}{u1}", p[1])), ("assistant", a), ("user", u2)], false)? == full;
        let t = Turns::measure(&r, !folded)?;
        let format = if folded {
            let prefix = t.before.strip_suffix(t.head_u.as_str()).ok_or_else(|| unsupported("a user turn starts differently when it comes first"))?.to_string();
            TurnFormat {
                prefix,
                heads: [String::new(), t.head_u, t.head_a],
                tails: [String::new(), t.tail_u, t.tail_a],
                generation: t.generation,
                default_system: None,
                folded_system: Some(p[1].clone()),
            }
        } else {
            Self::with_system_turns(&r, t, &p)?
        };
        format.check(&r)?;
        Ok(format)
    }

    fn with_system_turns(r: &Renderer, t: Turns, p: &[String]) -> Result<TurnFormat> {
        let tail_s = p[1].strip_suffix(t.head_u.as_str()).ok_or_else(|| unsupported("a system turn is not followed by a user turn's start"))?.to_string();
        // the BOS text is written once in front, unless it also starts each turn (SmolLM2)
        let bos = r.bos;
        let prefix = if !bos.is_empty() && p[0].starts_with(bos) && !t.head_u.starts_with(bos) { bos.to_string() } else { String::new() };
        let head_s = p[0][prefix.len()..].to_string();
        // a conversation without a system message starts with the prefix, or with the prefix
        // and a default system turn
        let alone = r.marked(&[("user", MARKS[1])], false)?;
        let before = alone.split_once(MARKS[1]).map(|(b, _)| b).unwrap_or_default();
        let before = before.strip_suffix(t.head_u.as_str()).ok_or_else(|| unsupported("a user turn starts differently when it comes first"))?;
        let default_system = if before == prefix {
            None
        } else {
            let inner = before.strip_prefix(p[0].as_str()).and_then(|b| b.strip_suffix(tail_s.as_str()));
            Some(inner.ok_or_else(|| unsupported("a conversation without a system message starts with something other than a system turn"))?.to_string())
        };
        Ok(TurnFormat {
            prefix,
            heads: [head_s, t.head_u, t.head_a],
            tails: [tail_s, t.tail_u, t.tail_a],
            generation: t.generation,
            default_system,
            folded_system: None,
        })
    }

    /// The prompt Ollama builds with this format for `turns` (which end with a user turn):
    /// its default system prompt first when there is no system message.
    pub fn render(&self, turns: &[Message]) -> String {
        let mut all = Vec::new();
        if let Some(s) = &self.default_system {
            if turns.first().is_none_or(|m| m.role != "system") {
                all.push(Message::new("system", s));
            }
        }
        all.extend_from_slice(turns);
        let mut out = self.prefix.clone();
        let mut pending: Option<&str> = None;
        for (i, m) in all.iter().enumerate() {
            let last = i + 1 == all.len();
            match m.role.as_str() {
                "system" if self.folded_system.is_some() => pending = Some(&m.content),
                "system" => out += &format!("{}{}{}", self.heads[SYSTEM], m.content, self.tails[SYSTEM]),
                "user" => {
                    out += &self.heads[USER];
                    if let (Some(s), Some(sep)) = (pending.take(), &self.folded_system) {
                        out += &format!("{s}{sep}");
                    }
                    out += &format!("{}{}", m.content, self.tails[USER]);
                    if last {
                        out += &self.generation;
                    }
                }
                _ => {
                    out += &format!("{}{}", self.heads[ASSISTANT], m.content);
                    if !last {
                        out += &self.tails[ASSISTANT];
                    }
                }
            }
        }
        out
    }

    /// Compares [`TurnFormat::render`] with the Jinja template on conversations with and
    /// without a system message, one and three user turns, text with newlines and non-ASCII,
    /// on two dates.
    fn check(&self, r: &Renderer) -> Result<()> {
        let sys = ("system", "You answer for a bike shop.\nBe brief.");
        let u = ("user", "When are you open? Öffnungszeiten, 营业时间");
        let a = ("assistant", "Monday to Saturday,\n9:00 to 18:00.");
        let u2 = ("user", "And on Sunday?");
        let cases: [&[(&str, &str)]; 5] = [&[u], &[sys, u], &[u, a, u2], &[sys, u, a, u2], &[sys, u, a, u2, a, u]];
        for turns in cases {
            let turns = msgs(turns);
            let want = r.render(&turns, true, DATES[0])?;
            if r.render(&turns, true, DATES[1])? != want {
                return Err(unsupported("it writes today's date"));
            }
            if self.render(&turns) != want {
                let roles: Vec<&str> = turns.iter().map(|m| m.role.as_str()).collect();
                return Err(unsupported(format!("measured as turns, it renders the conversation {} differently", roles.join(", "))));
            }
        }
        Ok(())
    }

    /// The template in Ollama's syntax (Go's text/template over `.Messages`).
    pub fn go_template(&self) -> String {
        let folded = self.folded_system.is_some();
        let mut t = lit(&self.prefix);
        if folded {
            t += "{{ $system := \"\" }}";
        }
        t += "{{ range $i, $m := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}";
        if folded {
            t += "{{ if eq $m.Role \"system\" }}{{ $system = $m.Content }}";
        } else {
            t += &format!("{{{{ if eq $m.Role \"system\" }}}}{}{{{{ $m.Content }}}}{}", lit(&self.heads[SYSTEM]), lit(&self.tails[SYSTEM]));
        }
        t += &format!("{{{{ else if eq $m.Role \"user\" }}}}{}", lit(&self.heads[USER]));
        if let Some(sep) = &self.folded_system {
            t += &format!("{{{{ if $system }}}}{{{{ $system }}}}{}{{{{ $system = \"\" }}}}{{{{ end }}}}", lit(sep));
        }
        t += &format!("{{{{ $m.Content }}}}{}{{{{ if $last }}}}{}{{{{ end }}}}", lit(&self.tails[USER]), lit(&self.generation));
        t += &format!(
            "{{{{ else if eq $m.Role \"assistant\" }}}}{}{{{{ $m.Content }}}}{{{{ if not $last }}}}{}{{{{ end }}}}{{{{ end }}}}{{{{ end }}}}",
            lit(&self.heads[ASSISTANT]),
            lit(&self.tails[ASSISTANT])
        );
        t
    }
}

/// `s` as literal text of a Go template: as is, or as a quoted string where it holds `{{`.
fn lit(s: &str) -> String {
    if !s.contains("{{") {
        return s.to_string();
    }
    format!("{{{{ {} }}}}", serde_json::to_string(s).expect("a string serializes"))
}

/// What a Modelfile points at.
pub struct ModelfileSource<'a> {
    /// FROM: the GGUF (or the base model, for an adapter).
    pub from: &'a str,
    /// ADAPTER: a LoRA adapter GGUF on top of `from`.
    pub adapter: Option<&'a str>,
    /// num_ctx.
    pub context: usize,
}

/// The Modelfile for `tok`'s chat template; the BOS the template writes is left out when the
/// GGUF's tokenizer adds it itself (`adds_bos`), as llama.cpp and Ollama do.
pub fn modelfile(tok: &Tokenizer, src: &ModelfileSource, adds_bos: bool) -> Result<String> {
    let template = tok.chat_template.as_deref().ok_or_else(|| Error::unsupported("the model", "has no chat template, so Ollama would send prompts as they are: give it one (chat_template.jinja) first"))?;
    let mut format = TurnFormat::measure(template, &tok.bos_token, &tok.eos_token)?;
    if adds_bos && !tok.bos_token.is_empty() {
        if let Some(rest) = format.prefix.strip_prefix(tok.bos_token.as_str()) {
            format.prefix = rest.to_string();
        }
    }
    let quoted = |what: &str, s: &str| -> Result<String> {
        if s.contains("\"\"\"") {
            return Err(unsupported(format!("its {what} holds \"\"\", which a Modelfile cannot quote")));
        }
        Ok(format!("\"\"\"{s}\"\"\""))
    };
    let mut out = format!("# Written by hearth; use it with: ollama create NAME -f THIS_FILE\nFROM {}\n", src.from);
    if let Some(a) = src.adapter {
        out += &format!("ADAPTER {a}\n");
    }
    out += &format!("TEMPLATE {}\n", quoted("template", &format.go_template())?);
    if let Some(s) = &format.default_system {
        out += &format!("SYSTEM {}\n", quoted("default system prompt", s)?);
    }
    let mut stops: Vec<&str> = Vec::new();
    for s in [format.tails[ASSISTANT].trim(), tok.eos_token.trim()] {
        if !s.is_empty() && !stops.contains(&s) {
            stops.push(s);
        }
    }
    for s in stops {
        out += &format!("PARAMETER stop {}\n", serde_json::to_string(s).expect("a string serializes"));
    }
    out += &format!("PARAMETER num_ctx {}\n", src.context);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

    #[test]
    fn measures_chatml() {
        let f = TurnFormat::measure(CHATML, "", "<|im_end|>").unwrap();
        assert_eq!(f.heads[USER], "<|im_start|>user\n");
        assert_eq!(f.tails[ASSISTANT], "<|im_end|>\n");
        assert_eq!(f.generation, "<|im_start|>assistant\n");
        assert_eq!((f.prefix.as_str(), f.default_system.as_deref(), f.folded_system.as_deref()), ("", None, None));
    }

    #[test]
    fn finds_a_default_system_prompt() {
        let t = format!("{{% if messages[0]['role'] != 'system' %}}<|im_start|>system\nBe kind.<|im_end|>\n{{% endif %}}{CHATML}");
        let f = TurnFormat::measure(&t, "", "<|im_end|>").unwrap();
        assert_eq!(f.default_system.as_deref(), Some("Be kind."));
        assert_eq!(f.render(&[Message::new("user", "hi")]), "<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
    }

    #[test]
    fn refuses_what_turns_cannot_hold() {
        // the date, and a template that writes the last user message differently
        let dated = format!("{{{{ strftime_now('%d %b %Y') }}}}{CHATML}");
        assert!(TurnFormat::measure(&dated, "", "").unwrap_err().to_string().contains("date"));
        let last = "{% for m in messages %}{% if loop.last %}LAST {% endif %}{{ m['content'] }}\n{% endfor %}";
        assert!(TurnFormat::measure(last, "", "").is_err());
    }

    #[test]
    fn quotes_literals_that_look_like_actions() {
        assert_eq!(lit("a{{b"), "{{ \"a{{b\" }}");
        assert_eq!(lit("<|im_start|>user\n"), "<|im_start|>user\n");
    }
}
