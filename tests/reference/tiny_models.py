"""Tiny random-weight Llama, Qwen2, Qwen3, Mistral and SmolLM3 models and their logits from
HF transformers.

Writes tests/fixtures/tiny-{llama,llama3,llama32,qwen2,qwen3,mistral,smollm3,gemma3,gemma3-p6,phi3}: HF
folders (config.json,
safetensors, tokenizer.json, tokenizer_config.json) and reference.json with the token ids
of a text, transformers' logits for them (f32) and its greedy continuation (12 tokens). They cover what SmolLM2 does not:
grouped-query attention with 4 query heads on 2 KV heads, untied embeddings, q/k/v biases
(Qwen2), sharded safetensors with an index and f16 weights (Llama), bf16 weights (Qwen2),
Llama 3 rope scaling (untied, and tied as Llama 3.2 1B/3B have it), and (Mistral) a head_dim that is not hidden_size / heads with a
SentencePiece-style tokenizer (Metaspace, byte fallback, "<s>" added in front). Qwen3: the
per-head q/k norms (random, not ones), a head_dim of twice hidden_size / heads, tied
embeddings. SmolLM3: four layers, the fourth without rope (NoPE).

    V/bin/python tests/reference/tiny_models.py [NAME...]   (default: all)
"""
import json
import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, PreTrainedTokenizerFast,
                          Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM, SmolLM3Config, SmolLM3ForCausalLM,
                          Gemma3TextConfig, Gemma3ForCausalLM, Phi3Config, Phi3ForCausalLM)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TEXT = "Hello world, tiny models are fun! 12345 and more text."
CORPUS = ["Hello world, tiny models are fun.", "The quick brown fox jumps over the lazy dog.", "12345 67890 text and more text"] * 50
TEMPLATE = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"


def tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", chat_template=TEMPLATE)


MISTRAL_TEXT = "Hello world, tiny models are fun! Un café 🙂 12345."
MISTRAL_TEMPLATE = "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]{% else %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"


def sentencepiece_tokenizer():
    """Llama 2 / Mistral style: "▁" for spaces (Metaspace, prepended to the first word), BPE
    with byte fallback (<0x00>..<0xFF> at ids 3..258, as in Mistral's vocabulary), "<s>" added
    in front of every encoding."""
    meta = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    trained = Tokenizer(models.BPE())
    trained.pre_tokenizer = meta
    trained.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>", "<s>", "</s>"]))
    learned = json.loads(trained.to_str())["model"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"<0x{b:02X}>": 3 + b for b in range(256)})
    for t in sorted(learned["vocab"], key=learned["vocab"].get):
        vocab.setdefault(t, len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in learned["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = meta
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens(["<unk>", "<s>", "</s>"])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   chat_template=MISTRAL_TEMPLATE)


def make(name, model, dtype, shard, tokenizer=tokenizer, text=TEXT):
    torch.manual_seed(0)
    out = FIXTURES / name
    out.mkdir(parents=True, exist_ok=True)
    for f in out.glob("*"):
        f.unlink()
    tok = tokenizer()
    # larger than the default init so that the logits are not all near zero
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.08)
    model.to(dtype).save_pretrained(out, max_shard_size=shard)
    tok.save_pretrained(out)
    model = type(model).from_pretrained(out, dtype=torch.float32).eval()
    ids = tok(text)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    # greedy continuation, without the EOS it may stop at (Hearth's generate leaves it out)
    with torch.no_grad():
        new = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False)[0, len(ids):].tolist()
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    greedy = new[:next((i for i, t in enumerate(new) if t in eos), len(new))]
    ref = {"param_count": sum(p.numel() for p in model.parameters()), "text": text, "ids": ids,
           "greedy": greedy, "greedy_text": tok.decode(greedy, skip_special_tokens=True), "decoded": tok.decode(ids, skip_special_tokens=True), "vocab": logits.shape[1], "logits": [round(x, 7) for x in logits.flatten().tolist()]}
    (out / "reference.json").write_text(json.dumps(ref) + "\n")
    print(name, len(ids), "tokens", sorted(p.name for p in out.iterdir()))


def main():
    common = dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5, tie_word_embeddings=False,
                  bos_token_id=1, eos_token_id=2)
    # Llama 3.x rope scaling; an original context of 16 puts head size 16's frequencies in all three bands
    llama3 = dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=16)
    # head_dim 32 with 4 heads on hidden 64: q has 128 rows, o 128 columns
    mistral = dict(common, vocab_size=sentencepiece_tokenizer().vocab_size, head_dim=32, sliding_window=None,
                   bos_token_id=1, eos_token_id=2)
    def gemma3(**layout):
        return Gemma3ForCausalLM(Gemma3TextConfig(**dict(
            common, head_dim=32, sliding_window=4, tie_word_embeddings=True, pad_token_id=0, hidden_activation="gelu_pytorch_tanh",
            rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                             "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}, **layout)))

    fixtures = {
        "tiny-llama": lambda: make("tiny-llama", LlamaForCausalLM(LlamaConfig(rope_theta=10000.0, **common)), torch.float16, "100KB"),
        "tiny-llama3": lambda: make("tiny-llama3", LlamaForCausalLM(LlamaConfig(rope_parameters=dict(rope_theta=10000.0, **llama3), **common)),
                                    torch.float32, "10MB"),
        # Llama 3.2 1B/3B's shape: tied embeddings with Llama 3 rope scaling
        "tiny-llama32": lambda: make("tiny-llama32", LlamaForCausalLM(LlamaConfig(rope_parameters=dict(rope_theta=500000.0, **llama3),
                                                                                 **dict(common, tie_word_embeddings=True))),
                                     torch.bfloat16, "10MB"),
        "tiny-qwen2": lambda: make("tiny-qwen2", Qwen2ForCausalLM(Qwen2Config(rope_theta=1000000.0, **common)), torch.bfloat16, "10MB"),
        "tiny-mistral": lambda: make("tiny-mistral", MistralForCausalLM(MistralConfig(rope_theta=1000000.0, **mistral)), torch.float32,
                                     "10MB", sentencepiece_tokenizer, MISTRAL_TEXT),
        "tiny-qwen3": lambda: make("tiny-qwen3", Qwen3ForCausalLM(Qwen3Config(**dict(common, head_dim=32, tie_word_embeddings=True,
                                                                                    rope_parameters=dict(rope_type="default", rope_theta=1000000.0)))),
                                   torch.float32, "10MB"),
        "tiny-smollm3": lambda: make("tiny-smollm3", SmolLM3ForCausalLM(SmolLM3Config(**dict(common, num_hidden_layers=4, pad_token_id=0,
                                                                                          rope_parameters=dict(rope_type="default", rope_theta=50000.0)))),
                                     torch.float32, "10MB"),
        # Gemma 3: a window of 4 tokens on layers 0 and 2 (pattern 2), their own rope theta,
        # query_pre_attn_scalar other than head_dim, GELU (tanh), four norms per layer
        "tiny-gemma3": lambda: make("tiny-gemma3", gemma3(num_hidden_layers=4, query_pre_attn_scalar=24, sliding_window_pattern=2),
                                    torch.float32, "10MB"),
        # Gemma 3 as llama.cpp runs it (its GGUF holds neither the layer pattern nor the local
        # theta nor query_pre_attn_scalar): six layers, every 6th global, scalar = head size
        "tiny-gemma3-p6": lambda: make("tiny-gemma3-p6", gemma3(num_hidden_layers=6, query_pre_attn_scalar=32, sliding_window_pattern=6),
                                       torch.float32, "10MB"),
        # Phi-3.5 / Phi-4-mini's features: fused qkv_proj and gate_up_proj, rope on 12 of 16
        # dims, LongRoPE (short factors up to the original context of 64; attention factor from
        # 256 / 64), a window of 8 tokens on every layer
        "tiny-phi3": lambda: make("tiny-phi3", Phi3ForCausalLM(Phi3Config(**dict(
            common, pad_token_id=0, sliding_window=8, original_max_position_embeddings=64,
            rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": 0.75,
                             "short_factor": [1.0, 1.1, 1.3, 1.6, 2.0, 2.5], "long_factor": [1.0, 1.5, 2.5, 4.0, 6.0, 9.0],
                             "original_max_position_embeddings": 64}))),
                                  torch.float32, "10MB"),
    }
    for name in sys.argv[1:] or fixtures:
        fixtures[name]()


if __name__ == "__main__":
    main()
