//! Training data: record formats, templates, loss masks, truncation, packing, and the
//! errors bad files get. Uses the tiny Llama fixture's tokenizer and chat template (ChatML).

use hearth_core::io::load::load_hf_folder;
use hearth_core::model::Tokenizer;
use hearth_core::ops::cross_entropy::IGNORE;
use hearth_core::train::batch::{epoch_batches, pack};
use hearth_core::lora::{Adapter, LoraConfig, Target};
use hearth_core::model::chat::Message;
use hearth_core::model::WeightFormat;
use hearth_core::train::data::{generation_prompt, parse_records, prepare, render_record, split_records, DataOptions, Template, CUSTOMER_SERVICE_JSONL};
use hearth_core::train::memory::{base_bytes, estimate, lora_params, ModelShape, DEFAULT_BINDING_LIMIT};
use hearth_tests::{fixture, DirFiles};

fn tok() -> Tokenizer {
    load_hf_folder(&DirFiles(fixture("tiny-llama")), None).unwrap().tokenizer
}

fn opts(template: &str) -> DataOptions {
    DataOptions { template: Template::parse(template), max_seq_len: 512, train_on_prompt: false, enable_thinking: None }
}

#[test]
fn malformed_files_name_the_line_and_the_field() {
    let e = parse_records("d.jsonl", "{\"text\": \"a\"}\n\n{not json}\n").unwrap_err().to_string();
    assert!(e.contains("d.jsonl line 3") && e.contains("not valid JSON"), "{e}");
    let e = parse_records("d.jsonl", "[1, 2]").unwrap_err().to_string();
    assert!(e.contains("d.jsonl item 1") && e.contains("expected an object"), "{e}");
    let e = parse_records("d.jsonl", "\n\n").unwrap_err().to_string();
    assert!(e.contains("no examples"), "{e}");
    let recs = parse_records("d.jsonl", "{\"instruction\": \"hi\"}\n").unwrap();
    let e = prepare(&recs, &tok(), &opts("alpaca")).unwrap_err().to_string();
    assert!(e.contains("d.jsonl line 1") && e.contains("\"output\""), "{e}");
    let recs = parse_records("d.jsonl", "{\"question\": \"hi\"}\n").unwrap();
    let e = prepare(&recs, &tok(), &opts("alpaca")).unwrap_err().to_string();
    assert!(e.contains("no known fields") && e.contains("question"), "{e}");
    let recs = parse_records("d.json", "[{\"prompt\": 3, \"completion\": \"x\"}]").unwrap();
    let e = prepare(&recs, &tok(), &opts("chatml")).unwrap_err().to_string();
    assert!(e.contains("d.json item 1") && e.contains("should be a string"), "{e}");
}

#[test]
fn templates_put_the_loss_on_the_response() {
    let t = tok();
    let recs = parse_records("d.jsonl", "{\"instruction\": \"Say hi\", \"input\": \"\", \"output\": \"hi\"}\n").unwrap();
    let seg = render_record(&recs[0], &opts("alpaca"), &t).unwrap();
    assert!(seg[0].0.ends_with("### Instruction:\nSay hi\n\n### Response:\n") && !seg[0].1, "{seg:?}");
    assert_eq!(seg[1], ("hi<|im_end|>".to_string(), true));

    let custom = Template::parse("### 指令：\\n{instruction}\\n\\n### 回應：\\n{output}");
    let seg = render_record(&recs[0], &DataOptions { template: custom, ..opts("model") }, &t).unwrap();
    assert_eq!(seg, vec![("### 指令：\nSay hi\n\n### 回應：\n".to_string(), false), ("hi<|im_end|>".to_string(), true)]);

    // a two-turn chat with the model's (ChatML) template: both assistant turns carry loss
    let chat = r#"{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]}"#;
    let recs = parse_records("d.jsonl", chat).unwrap();
    let seg = render_record(&recs[0], &opts("model"), &t).unwrap();
    let loss: Vec<&str> = seg.iter().filter(|s| s.1).map(|s| s.0.as_str()).collect();
    assert_eq!(loss, vec!["b<|im_end|>\n", "d<|im_end|>\n"]);
    let (ex, _) = prepare(&recs, &t, &opts("model")).unwrap();
    let text: String = seg.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(ex[0].tokens, t.encode(&text, false).unwrap(), "segments tokenize like the whole text here");

    // --train-on-prompt: every token after the first carries loss
    let o = DataOptions { train_on_prompt: true, ..opts("model") };
    let (ex, _) = prepare(&recs, &t, &o).unwrap();
    assert!(ex[0].loss.iter().all(|&l| l));
}

#[test]
fn truncation_is_counted_and_empty_examples_dropped() {
    let t = tok();
    let long = "word ".repeat(200);
    let text = format!("{{\"prompt\": \"{long}\", \"completion\": \"end\"}}\n{{\"prompt\": \"q\", \"completion\": \"{long}\"}}\n");
    let recs = parse_records("d.jsonl", &text).unwrap();
    let o = DataOptions { max_seq_len: 64, ..opts("{prompt}{completion}") };
    let (ex, stats) = prepare(&recs, &t, &o).unwrap();
    assert_eq!((stats.examples, stats.truncated, stats.dropped), (1, 2, 1), "{stats:?}");
    assert_eq!(ex[0].tokens.len(), 64);
}

#[test]
fn packing_keeps_examples_apart() {
    let t = tok();
    let recs = parse_records("d.jsonl", "{\"prompt\": \"ab\", \"completion\": \"cd\"}\n{\"prompt\": \"x\", \"completion\": \"yz\"}\n").unwrap();
    let (ex, _) = prepare(&recs, &t, &opts("{prompt}{completion}")).unwrap();
    let b = pack(&[&ex[0], &ex[1]]);
    let n0 = ex[0].tokens.len();
    assert_eq!(b.len(), n0 + ex[1].tokens.len());
    assert_eq!(b.pos[n0], 0, "positions restart in each example");
    assert_eq!((b.seg[n0 - 1], b.seg[n0]), (0, 1));
    assert_eq!(b.targets[n0 - 1], IGNORE, "no target across examples");
    assert_eq!(b.counted(), ex[0].counted() + ex[1].counted());
    // the order depends on (seed, epoch) only, and covers every example once
    let a = epoch_batches(10, 3, 5, 1);
    assert_eq!(a, epoch_batches(10, 3, 5, 1));
    assert_ne!(a, epoch_batches(10, 3, 5, 2));
    let mut all: Vec<usize> = a.concat();
    all.sort();
    assert_eq!(all, (0..10).collect::<Vec<_>>());
}

#[test]
fn bundled_customer_service_data_parses() {
    let recs = parse_records("customer_service.jsonl", CUSTOMER_SERVICE_JSONL).unwrap();
    let (ex, stats) = prepare(&recs, &tok(), &opts("model")).unwrap();
    assert_eq!(ex.len(), recs.len());
    assert_eq!(stats.truncated, 0);
}

#[test]
fn generation_prompts_are_the_training_prompts() {
    let t = tok();
    let history = vec![Message::new("user", "Say hi")];
    // the same record with an answer, rendered for training: its prompt part must be what
    // generation sends, so the fine-tuned model sees what it learned from
    let rec = &parse_records("d.jsonl", "{\"instruction\": \"Say hi\", \"output\": \"hi\"}").unwrap()[0];
    for template in [Template::Alpaca, Template::Chatml, Template::Model, Template::parse("Q: {instruction}\\nA: {output}")] {
        let o = DataOptions { template: template.clone(), ..opts("model") };
        let (prompt, chat) = generation_prompt(&history, &o, &t).unwrap();
        let seg = render_record(rec, &o, &t).unwrap();
        let trained: String = seg.iter().take_while(|s| !s.1).map(|s| s.0.as_str()).collect();
        assert_eq!(prompt, trained, "{template:?}");
        assert_eq!(chat, matches!(template, Template::Chatml | Template::Model));
    }
    let e = generation_prompt(&[], &opts("alpaca"), &t).unwrap_err().to_string();
    assert!(e.contains("no user message"), "{e}");
}

#[test]
fn validation_split_is_seeded_and_disjoint() {
    let recs = parse_records("cs.jsonl", CUSTOMER_SERVICE_JSONL).unwrap();
    let (train, val) = split_records(recs.clone(), 0.1, 7);
    assert_eq!((train.len(), val.len()), (recs.len() - 3, 3));
    assert!(val.iter().all(|v| !train.iter().any(|t| t.origin == v.origin)));
    assert_eq!(split_records(recs.clone(), 0.1, 7).1.iter().map(|r| &r.origin).collect::<Vec<_>>(), val.iter().map(|r| &r.origin).collect::<Vec<_>>());
    assert_eq!(split_records(recs.clone(), 0.0, 7).1.len(), 0);
}

#[test]
fn memory_estimate_parts_add_up() {
    let cfg = load_hf_folder(&DirFiles(fixture("tiny-llama")), None).unwrap().cfg;
    let lora = LoraConfig { r: 8, targets: vec![Target::Q, Target::V, Target::Down], ..LoraConfig::default() };
    // the estimate counts the parameters Adapter::init makes
    assert_eq!(lora_params(&cfg, 8, &lora.targets), Adapter::init(&cfg, &lora, 0).unwrap().trainable_params());
    let shape = ModelShape { head_format: WeightFormat::F32, chunk: 256, ctx_tokens: 128, binding_limit: DEFAULT_BINDING_LIMIT };
    let e = estimate(&cfg, WeightFormat::F32, &lora, 256, false, shape);
    let p = lora_params(&cfg, 8, &lora.targets) as u64;
    assert_eq!((e.adapter, e.gradients, e.optimizer), (4 * p, 4 * p, 8 * p));
    // over 2,048 tokens the GPU kernels split the gradients' reductions in 8: one layer's
    // parts are 8 of its gradients
    let long = estimate(&cfg, WeightFormat::F32, &lora, 2048, false, shape);
    assert_eq!(long.gradients, 4 * p + 8 * 4 * p / cfg.n_layers as u64);
    // every weight but the embedding, which stays in host memory (tied: it is the lm_head)
    let embed = if cfg.tie_embeddings { 0 } else { cfg.vocab_size * cfg.hidden_size };
    assert_eq!(e.base, 4 * (cfg.param_count() - embed) as u64);
    assert_eq!(e.total(), e.base + e.adapter + e.gradients + e.optimizer + e.activations + e.inference);
    assert!(estimate(&cfg, WeightFormat::F32, &lora, 256, true, shape).activations < e.activations, "checkpointing keeps less");
    let nf4 = WeightFormat::parse("nf4").unwrap();
    let rest = e.base - 4 * cfg.linear_param_count() as u64;
    assert!((base_bytes(&cfg, nf4, WeightFormat::F32) - rest) * 7 < e.base - rest, "NF4 linear layers take about an eighth of f32");
}

/// Chat templates of the families (tests/fixtures/chat-templates: Qwen3's with thinking
/// blocks, Gemma 3's without a system role, Phi-3.5's, SmolLM3's with its date, reasoning mode
/// and {% generation %} markers) render as transformers' apply_chat_template does, with enable_thinking unset, on
/// and off (tests/reference/chat_templates.py).
#[test]
fn chat_templates_render_as_transformers_does() {
    use hearth_core::model::chat::render_dated;
    let dir = hearth_tests::fixture("chat-templates");
    let cases: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap();
    for c in cases.as_array().unwrap() {
        let template = std::fs::read_to_string(dir.join(c["template"].as_str().unwrap())).unwrap();
        let messages: Vec<Message> = serde_json::from_value(c["messages"].clone()).unwrap();
        let (bos, eos) = (c["bos_token"].as_str().unwrap(), c["eos_token"].as_str().unwrap());
        let d = &c["date"];
        let date = (d[0].as_i64().unwrap(), d[1].as_u64().unwrap() as u32, d[2].as_u64().unwrap() as u32);
        let got = render_dated(&template, &messages, c["add_generation_prompt"].as_bool().unwrap(), bos, eos, c["enable_thinking"].as_bool(), date).unwrap();
        assert_eq!(got, c["text"].as_str().unwrap(), "{} {:?}", c["template"], c["messages"]);
    }
}

/// Training on a Qwen3 conversation: the response carries loss together with the empty
/// thinking block the template writes before it (what transformers renders for the whole
/// conversation), and generation asks with the prompt training saw.
#[test]
fn qwen3_chats_train_on_the_answer_after_the_thinking_block() {
    let mut t = tok();
    t.chat_template = Some(std::fs::read_to_string(hearth_tests::fixture("chat-templates/qwen3.jinja")).unwrap());
    let recs = parse_records("d.jsonl", r#"{"messages": [{"role": "user", "content": "When?"}, {"role": "assistant", "content": "At nine."}]}"#).unwrap();
    let seg = render_record(&recs[0], &opts("model"), &t).unwrap();
    let loss: Vec<&str> = seg.iter().filter(|s| s.1).map(|s| s.0.as_str()).collect();
    assert_eq!(loss, vec!["<think>\n\n</think>\n\nAt nine.<|im_end|>\n"]);
    let (prompt, _) = generation_prompt(&[Message::new("user", "When?")], &opts("model"), &t).unwrap();
    assert_eq!(prompt, "<|im_start|>user\nWhen?<|im_end|>\n<|im_start|>assistant\n");
    // with thinking off the generation prompt holds the empty block, and training's prompt too
    let off = DataOptions { enable_thinking: Some(false), ..opts("model") };
    let (prompt, _) = generation_prompt(&[Message::new("user", "When?")], &off, &t).unwrap();
    assert!(prompt.ends_with("<|im_start|>assistant\n<think>\n\n</think>\n\n"), "{prompt:?}");
    let seg = render_record(&recs[0], &off, &t).unwrap();
    assert_eq!(seg.iter().filter(|s| s.1).map(|s| s.0.as_str()).collect::<Vec<_>>(), vec!["At nine.<|im_end|>\n"]);
}

/// Preference records: strings or chat lists become a chosen and a rejected example with the
/// loss on the completion only (a conversation's last assistant turn); bad records name their
/// line; a pair whose completion is cut to nothing is dropped and counted.
#[test]
fn preference_records_become_pairs_and_bad_ones_are_named() {
    use hearth_core::train::preference::prepare_pairs;
    let tok = tok();
    let pairs = |text: &str, o: &DataOptions| prepare_pairs(&parse_records("p.jsonl", text).unwrap(), &tok, o);
    let plain = opts("{prompt}{completion}");
    let (p, stats) = pairs(r#"{"prompt": "Q: open?\nA:", "chosen": " Tuesday to Saturday.", "rejected": " Never."}"#, &plain).unwrap();
    assert_eq!((p.len(), stats.examples), (1, 1));
    let (c, r) = (&p[0].chosen, &p[0].rejected);
    let prompt = tok.encode("Q: open?\nA:", true).unwrap().len();
    assert_eq!(c.tokens[..prompt], r.tokens[..prompt], "the pair shares its prompt");
    assert!(c.loss[..prompt].iter().all(|&l| !l) && c.loss[prompt..].iter().all(|&l| l), "loss on the completion (and EOS) only");

    // chat lists: the earlier assistant turn is prompt; the loss is on the last one only
    let chat = r#"{"chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Open?"}, {"role": "assistant", "content": "Yes, 9 to 6."}],
                   "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Open?"}, {"role": "assistant", "content": "No."}]}"#;
    let (p, _) = pairs(&chat.replace('\n', " "), &opts("chatml")).unwrap();
    let runs = |loss: &[bool]| loss.windows(2).filter(|w| !w[0] && w[1]).count();
    assert_eq!((runs(&p[0].chosen.loss), runs(&p[0].rejected.loss)), (1, 1), "one run of loss tokens each");
    let explicit = r#"{"prompt": [{"role": "user", "content": "Open?"}], "chosen": [{"role": "assistant", "content": "Yes."}], "rejected": [{"role": "assistant", "content": "No."}]}"#;
    assert_eq!(pairs(explicit, &opts("chatml")).unwrap().0.len(), 1);

    let e = pairs("{\"prompt\": \"a\", \"chosen\": \"b\", \"rejected\": \"c\"}\n{\"prompt\": \"a\", \"chosen\": \"b\"}\n", &plain).unwrap_err().to_string();
    assert!(e.contains("p.jsonl line 2") && e.contains("\"rejected\" is missing"), "{e}");
    let e = pairs(r#"{"prompt": "a", "chosen": "same", "rejected": "same"}"#, &plain).unwrap_err().to_string();
    assert!(e.contains("line 1") && e.contains("the same"), "{e}");
    let e = pairs(r#"{"prompt": "a", "chosen": "b", "rejected": [{"role": "assistant", "content": "c"}]}"#, &plain).unwrap_err().to_string();
    assert!(e.contains("line 1"), "{e}");
    // a prompt that fills max_seq_len: the pair is dropped and counted
    let short = DataOptions { max_seq_len: 4, ..plain.clone() };
    let text = "{\"prompt\": \"a long prompt that fills it\", \"chosen\": \" b\", \"rejected\": \" c\"}\n{\"prompt\": \"Q\", \"chosen\": \" yes\", \"rejected\": \" no\"}\n";
    let (p, stats) = pairs(text, &short).unwrap();
    assert_eq!((p.len(), stats.dropped), (1, 1));
}
