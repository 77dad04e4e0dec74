//! `--ollama` Modelfiles: the chat template measured as turns from real Jinja templates and
//! written in Ollama's syntax. Go's own template engine renders the written TEMPLATE in
//! tests/ollama (run by .ci/run); here the Modelfile's contents are checked.

use hearth_core::io::load::load_gguf;
use hearth_core::io::ollama::{modelfile, ModelfileSource, TurnFormat};
use hearth_core::model::chat::{render, Message};
use hearth_tests::{fixture, smollm2_gguf};

fn template(name: &str) -> String {
    std::fs::read_to_string(fixture("chat-templates").join(name)).unwrap()
}

#[test]
fn smollm2_modelfile_holds_its_template_system_prompt_and_stop() {
    let Some(path) = smollm2_gguf() else { return };
    let m = load_gguf(&std::fs::read(&path).unwrap(), "smollm2", None).unwrap();
    let src = ModelfileSource { from: "./smollm2.gguf", adapter: Some("./faq.gguf"), context: 8192 };
    let text = modelfile(&m.tokenizer, &src, false).unwrap();
    let want = r#"# Written by hearth; use it with: ollama create NAME -f THIS_FILE
FROM ./smollm2.gguf
ADAPTER ./faq.gguf
TEMPLATE """{{ range $i, $m := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}{{ if eq $m.Role "system" }}<|im_start|>system
{{ $m.Content }}<|im_end|>
{{ else if eq $m.Role "user" }}<|im_start|>user
{{ $m.Content }}<|im_end|>
{{ if $last }}<|im_start|>assistant
{{ end }}{{ else if eq $m.Role "assistant" }}<|im_start|>assistant
{{ $m.Content }}{{ if not $last }}<|im_end|>
{{ end }}{{ end }}{{ end }}"""
SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""
PARAMETER stop "<|im_end|>"
PARAMETER num_ctx 8192
"#;
    assert_eq!(text, want);
}

#[test]
fn gemma3_system_prompt_folds_into_the_first_user_turn() {
    let t = template("gemma3.jinja");
    let f = TurnFormat::measure(&t, "<bos>", "<eos>").unwrap();
    assert_eq!(f.folded_system.as_deref(), Some("\n\n"));
    assert_eq!(f.prefix, "<bos>");
    let go = f.go_template();
    assert!(go.starts_with("<bos>{{ $system := \"\" }}"), "{go}");
    assert!(go.contains("{{ if $system }}{{ $system }}\n\n{{ $system = \"\" }}{{ end }}"), "{go}");
    // the format renders what the Jinja template does
    let turns = [Message::new("system", "Be brief."), Message::new("user", "Hi"), Message::new("assistant", "Hello."), Message::new("user", "Bye")];
    assert_eq!(f.render(&turns), render(&t, &turns, true, "<bos>", "<eos>", None).unwrap());
}

#[test]
fn phi3_and_qwen3_measure_as_turns() {
    for (name, bos, eos, head_u) in [("phi3.jinja", "<s>", "<|endoftext|>", "<|user|>\n"), ("qwen3.jinja", "", "<|im_end|>", "<|im_start|>user\n")] {
        let f = TurnFormat::measure(&template(name), bos, eos).unwrap();
        assert_eq!(f.heads[1], head_u, "{name}");
        assert_eq!(f.default_system, None, "{name}");
    }
    // Phi-3 ends a conversation without a generation prompt with EOS: not part of a turn
    let f = TurnFormat::measure(&template("phi3.jinja"), "<s>", "<|endoftext|>").unwrap();
    assert_eq!(f.tails[2], "<|end|>\n");
}

#[test]
fn templates_turns_cannot_hold_are_refused_with_the_reason() {
    let e = TurnFormat::measure(&template("smollm3.jinja"), "", "<|im_end|>").unwrap_err().to_string();
    assert!(e.contains("today's date") && e.contains("by hand"), "{e}");
}
