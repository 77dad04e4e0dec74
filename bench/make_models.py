"""Writes HF model folders with the exact configs of the models bench/gpu.sh times, and
random weights (speed does not depend on the values; the real files are too big to carry
to the device machine). The tokenizer is the tiny fixtures' byte-level BPE: the benches
feed token ids, and its 300 ids all lie inside every model's vocabulary.

    python3 bench/make_models.py OUT_DIR
"""
import shutil
import sys
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

TOKENIZER = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "tiny-llama"

# HuggingFaceTB/SmolLM2-135M-Instruct's config.json
SMOLLM2 = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
               num_key_value_heads=3, max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=100000.0,
               tie_word_embeddings=True, hidden_act="silu", bos_token_id=1, eos_token_id=2)
# Qwen/Qwen2.5-0.5B-Instruct's config.json
QWEN25 = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
              num_key_value_heads=2, max_position_embeddings=32768, rms_norm_eps=1e-6, rope_theta=1000000.0,
              tie_word_embeddings=True, hidden_act="silu", use_sliding_window=False, bos_token_id=151643,
              eos_token_id=151645)

# Qwen/Qwen3-0.6B's config.json (the model of llama.cpp's WebGPU training figure, issue 16)
QWEN3 = dict(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
             num_key_value_heads=8, head_dim=128, max_position_embeddings=40960, rms_norm_eps=1e-6, rope_theta=1000000.0,
             tie_word_embeddings=True, hidden_act="silu", use_sliding_window=False, bos_token_id=151643, eos_token_id=151645)

# Qwen/Qwen2.5-1.5B-Instruct's config.json (the 1.5B model the web page loads in 4-bit, issue 18)
QWEN25_15B = dict(QWEN25, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12)

MODELS = {
    "smollm2-135m": (LlamaConfig, LlamaForCausalLM, SMOLLM2),
    "qwen2.5-0.5b": (Qwen2Config, Qwen2ForCausalLM, QWEN25),
    "qwen3-0.6b": (Qwen3Config, Qwen3ForCausalLM, QWEN3),
}
# written only when named, and in bf16 as the Hub has it (3.1 GB)
ON_REQUEST = {"qwen2.5-1.5b": (Qwen2Config, Qwen2ForCausalLM, QWEN25_15B)}


def make(out: Path, name: str):
    config_cls, model_cls, kwargs = {**MODELS, **ON_REQUEST}[name]
    torch.manual_seed(0)
    model = model_cls(config_cls(**kwargs)).to(torch.bfloat16 if name in ON_REQUEST else torch.float32)
    folder = out / name
    model.save_pretrained(folder, safe_serialization=True)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TOKENIZER / f, folder / f)
    print(f"{folder}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters", flush=True)


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for name in (sys.argv[2:] or MODELS):
        make(out, name)


if __name__ == "__main__":
    main()
