//! Chat templates: the model's Jinja template rendered with minijinja, as HF's
//! `apply_chat_template` does (messages, add_generation_prompt, bos_token, eos_token, and
//! enable_thinking when one is chosen: Qwen3's templates read it).

use minijinja::{context, Environment, ErrorKind};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Self {
        Message { role: role.to_string(), content: content.to_string() }
    }
}

/// Renders `template` for `messages`; `add_generation_prompt` appends the assistant's header.
/// `enable_thinking` is passed to the template when given (None: undefined, as when
/// apply_chat_template is called without it). `strftime_now` formats today's date.
pub fn render(template: &str, messages: &[Message], add_generation_prompt: bool, bos_token: &str, eos_token: &str, enable_thinking: Option<bool>) -> Result<String> {
    render_dated(template, messages, add_generation_prompt, bos_token, eos_token, enable_thinking, today())
}

/// [`render`] with `strftime_now` formatting `date` (year, month, day) instead of today.
#[allow(clippy::too_many_arguments)]
pub fn render_dated(
    template: &str,
    messages: &[Message],
    add_generation_prompt: bool,
    bos_token: &str,
    eos_token: &str,
    enable_thinking: Option<bool>,
    date: (i64, u32, u32),
) -> Result<String> {
    let mut env = Environment::new();
    // Python string methods (.strip(), .startswith(), ...) that HF templates call.
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
        Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
    });
    env.add_function("strftime_now", move |fmt: String| strftime(&fmt, date));
    let template = without_generation_tags(template);
    env.add_template("chat", &template).map_err(|e| Error::bad_file("the chat template", format!("does not parse: {e}")).with_source(e))?;
    let tmpl = env.get_template("chat").expect("just added");
    tmpl.render(context! {
        messages => minijinja::Value::from(minijinja::value::Serde(messages)),
        add_generation_prompt => add_generation_prompt,
        bos_token => bos_token,
        eos_token => eos_token,
        enable_thinking => enable_thinking.map_or(minijinja::Value::UNDEFINED, minijinja::Value::from),
    })
    .map_err(|e| Error::bad_file("the chat template", format!("failed: {e}")).with_source(e))
}

/// The template without `{% generation %}` / `{% endgeneration %}` (transformers' extension
/// that marks the assistant's tokens, as SmolLM3's and TRL's training templates have it): they
/// render nothing, and Hearth finds the response tokens by rendering turn by turn.
fn without_generation_tags(template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{%") {
        let Some(len) = rest[start..].find("%}") else { break };
        let tag = &rest[start + 2..start + len];
        let name = tag.trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace());
        out.push_str(&rest[..start]);
        if name != "generation" && name != "endgeneration" {
            out.push_str(&rest[start..start + len + 2]);
        }
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    out
}

/// Today's date (UTC) as (year, month, day), from the system clock or the browser's.
fn today() -> (i64, u32, u32) {
    #[cfg(not(target_arch = "wasm32"))]
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    #[cfg(target_arch = "wasm32")]
    let secs = (js_sys::Date::now() / 1000.0) as i64;
    civil_from_days(secs.div_euclid(86_400))
}

/// The proleptic Gregorian date of a day count from 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

const MONTHS: [&str; 12] = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];

/// Python's strftime for a date: %d %m %y %Y %B %b %%; other codes are kept as written.
fn strftime(fmt: &str, (y, m, d): (i64, u32, u32)) -> String {
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('y') => out.push_str(&format!("{:02}", y.rem_euclid(100))),
            Some('Y') => out.push_str(&y.to_string()),
            Some('B') => out.push_str(MONTHS[m as usize - 1]),
            Some('b') => out.push_str(&MONTHS[m as usize - 1][..3]),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_template_renders_with_generation_prompt() {
        let t = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] | trim }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
        let out = render(t, &[Message::new("user", " hi ")], true, "", "", None).unwrap();
        assert_eq!(out, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
    }

    #[test]
    fn dates_and_generation_tags() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_787), (2026, 11, 30));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(strftime("%d %B %Y, %b %m/%y %%", (2026, 3, 5)), "05 March 2026, Mar 03/26 %");
        let t = "{% for m in messages %}{%- generation -%}[{{ m.content }}]{% endgeneration %}{% endfor %}";
        assert_eq!(render(t, &[Message::new("user", "a")], false, "", "", None).unwrap(), "[a]");
    }

    #[test]
    fn raise_exception_is_an_error() {
        let t = "{{ raise_exception('roles must alternate') }}";
        let e = render(t, &[], false, "", "", None).unwrap_err();
        assert!(e.to_string().contains("roles must alternate"), "{e}");
    }
}
