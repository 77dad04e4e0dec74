"""tests/fixtures/tiny-{llama3,qwen3,smollm3,gemma3-p6,phi3}.gguf: the tiny HF folders written as llama.cpp's
convert_hf_to_gguf.py writes them, with the byte-level BPE tokenizer in tokenizer.ggml.*
(pre "gpt-2": the tiny tokenizers have no family split regex; those are checked by
gguf_tokenizers.py).
Their logits must be the HF folders' (tests/fixtures/tiny-*/reference.json, from
transformers).
- llama3 (arch llama): q/k rows permuted, the rope scaling as per-frequency divisors in
  rope_freqs.weight (no scaling parameters in the metadata);
- qwen3 (arch qwen3): q/k not permuted, q_norm/k_norm as attn_q_norm/attn_k_norm,
  key_length the head size, tied embeddings (no output.weight);
- smollm3 (arch smollm3): llama's permutation; its NoPE layers are not in the metadata
  (llama.cpp takes every 4th layer);
- phi3 (arch phi3): q/k/v as one attn_qkv, gate and up as one ffn_up, the rotary dims in
  rope.dimension_count, LongRoPE as rope_factors_short/long.weight with
  rope.scaling.attn_factor and .original_context_length, the window in the metadata;
- gemma3-p6 (arch gemma3): norm weights stored as 1 + w, post_attention_norm, ffn_norm (the
  pre-feedforward norm), post_ffw_norm, the sliding window in the metadata (the pattern, 6,
  and the local rope theta, 10000, are llama.cpp's constants).

    V/bin/python tests/reference/tiny_gguf.py
"""
import json
import math
from pathlib import Path

import gguf
import numpy as np
from safetensors.numpy import load_file

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def permute(w, n_head):
    """llama.cpp's q/k row order: each head's two rotary halves interleaved."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def rope_factors(cfg):
    """convert_hf_to_gguf.py's LlamaModel rope_freqs for rope_type llama3."""
    p = cfg["rope_parameters"]
    dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    freqs = 1.0 / (p["rope_theta"] ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    factor, low, high, old = p["factor"], p["low_freq_factor"], p["high_freq_factor"], p["original_max_position_embeddings"]
    out = []
    for f in freqs:
        wavelen = 2 * math.pi / f
        if wavelen < old / high:
            out.append(1.0)
        elif wavelen > old / low:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def write(name, arch, permute_qk, pre):
    src = FIXTURES / name
    cfg = json.loads((src / "config.json").read_text())
    tok = json.loads((src / "tokenizer.json").read_text())
    w = load_file(str(src / "model.safetensors"))
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    head = cfg.get("head_dim") or cfg["hidden_size"] // nh
    dest = FIXTURES / f"{name}.gguf"

    out = gguf.GGUFWriter(str(dest), arch)
    out.add_context_length(cfg["max_position_embeddings"])
    out.add_embedding_length(cfg["hidden_size"])
    out.add_block_count(cfg["num_hidden_layers"])
    out.add_feed_forward_length(cfg["intermediate_size"])
    rope = cfg["rope_parameters"].get("full_attention", cfg["rope_parameters"])  # Gemma's per layer type
    out.add_rope_dimension_count(int(head * rope.get("partial_rotary_factor", 1.0)))
    out.add_head_count(nh)
    out.add_head_count_kv(nkv)
    out.add_key_length(head)
    out.add_value_length(head)
    out.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    out.add_rope_freq_base(rope["rope_theta"])
    out.add_vocab_size(cfg["vocab_size"])
    if arch in ("gemma3", "phi3"):
        out.add_sliding_window(cfg["sliding_window"])
    if rope.get("rope_type") == "longrope":
        # convert_hf_to_gguf.py's Phi3MiniModel: the attention factor from the context ratio
        orig = rope["original_max_position_embeddings"]
        scale = cfg["max_position_embeddings"] / orig
        out.add_rope_scaling_attn_factors(math.sqrt(1 + math.log(scale) / math.log(orig)))
        out.add_rope_scaling_orig_ctx_len(orig)

    vocab = tok["model"]["vocab"]
    for a in tok["added_tokens"]:
        vocab[a["content"]] = a["id"]
    tokens = sorted(vocab, key=vocab.get)
    special = {a["content"] for a in tok["added_tokens"] if a["special"]}
    out.add_tokenizer_model("gpt2")
    out.add_tokenizer_pre(pre)
    out.add_token_list(tokens)
    out.add_token_types([gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in tokens])
    out.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]])
    out.add_bos_token_id(cfg["bos_token_id"])
    out.add_eos_token_id(cfg["eos_token_id"])
    out.add_add_bos_token(False)

    f32 = lambda name: w[name].astype(np.float32)
    # llama.cpp's converter stores Gemma's norms as 1 + w
    norm = (lambda name: f32(name) + 1) if arch == "gemma3" else f32
    qk = (lambda m, n: permute(m, n)) if permute_qk else (lambda m, n: m)
    out.add_tensor("token_embd.weight", f32("model.embed_tokens.weight"))
    out.add_tensor("output_norm.weight", norm("model.norm.weight"))
    if "lm_head.weight" in w:
        out.add_tensor("output.weight", f32("lm_head.weight"))
    if rope.get("rope_type") == "llama3":
        out.add_tensor("rope_freqs.weight", rope_factors(cfg))
    if rope.get("rope_type") == "longrope":
        out.add_tensor("rope_factors_long.weight", np.array(rope["long_factor"], dtype=np.float32))
        out.add_tensor("rope_factors_short.weight", np.array(rope["short_factor"], dtype=np.float32))
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out.add_tensor(f"blk.{i}.attn_norm.weight", norm(p + "input_layernorm.weight"))
        if arch == "phi3":
            out.add_tensor(f"blk.{i}.attn_qkv.weight", f32(p + "self_attn.qkv_proj.weight"))
        else:
            out.add_tensor(f"blk.{i}.attn_q.weight", qk(f32(p + "self_attn.q_proj.weight"), nh))
            out.add_tensor(f"blk.{i}.attn_k.weight", qk(f32(p + "self_attn.k_proj.weight"), nkv))
            out.add_tensor(f"blk.{i}.attn_v.weight", f32(p + "self_attn.v_proj.weight"))
        if p + "self_attn.q_norm.weight" in w:
            out.add_tensor(f"blk.{i}.attn_q_norm.weight", norm(p + "self_attn.q_norm.weight"))
            out.add_tensor(f"blk.{i}.attn_k_norm.weight", norm(p + "self_attn.k_norm.weight"))
        out.add_tensor(f"blk.{i}.attn_output.weight", f32(p + "self_attn.o_proj.weight"))
        if arch == "gemma3":
            out.add_tensor(f"blk.{i}.post_attention_norm.weight", norm(p + "post_attention_layernorm.weight"))
            out.add_tensor(f"blk.{i}.ffn_norm.weight", norm(p + "pre_feedforward_layernorm.weight"))
            out.add_tensor(f"blk.{i}.post_ffw_norm.weight", norm(p + "post_feedforward_layernorm.weight"))
        else:
            out.add_tensor(f"blk.{i}.ffn_norm.weight", f32(p + "post_attention_layernorm.weight"))
        if arch == "phi3":
            out.add_tensor(f"blk.{i}.ffn_up.weight", f32(p + "mlp.gate_up_proj.weight"))
        else:
            out.add_tensor(f"blk.{i}.ffn_gate.weight", f32(p + "mlp.gate_proj.weight"))
            out.add_tensor(f"blk.{i}.ffn_up.weight", f32(p + "mlp.up_proj.weight"))
        out.add_tensor(f"blk.{i}.ffn_down.weight", f32(p + "mlp.down_proj.weight"))
    out.write_header_to_file()
    out.write_kv_data_to_file()
    out.write_tensors_to_file()
    out.close()
    print("wrote", dest)


def main():
    # "gpt-2": llama.cpp's name for the plain byte-level split
    write("tiny-llama3", "llama", True, "gpt-2")
    write("tiny-qwen3", "qwen3", False, "gpt-2")
    write("tiny-smollm3", "smollm3", True, "gpt-2")
    write("tiny-gemma3-p6", "gemma3", False, "gpt-2")
    write("tiny-phi3", "phi3", False, "gpt-2")


if __name__ == "__main__":
    main()
