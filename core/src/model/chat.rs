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
/// apply_chat_template is called without it).
pub fn render(template: &str, messages: &[Message], add_generation_prompt: bool, bos_token: &str, eos_token: &str, enable_thinking: Option<bool>) -> Result<String> {
    let mut env = Environment::new();
    // Python string methods (.strip(), .startswith(), ...) that HF templates call.
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
        Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
    });
    env.add_function("strftime_now", |_fmt: String| "26 Jul 2024".to_string());
    env.add_template("chat", template).map_err(|e| Error::bad_file("the chat template", format!("does not parse: {e}")).with_source(e))?;
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
    fn raise_exception_is_an_error() {
        let t = "{{ raise_exception('roles must alternate') }}";
        let e = render(t, &[], false, "", "", None).unwrap_err();
        assert!(e.to_string().contains("roles must alternate"), "{e}");
    }
}
