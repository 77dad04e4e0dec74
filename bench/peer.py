"""PyTorch + PEFT on the same model, settings and data shapes as `hearth bench train` and
`hearth bench generate`, and torch's own matmuls and a device-to-device copy as the chip's
practical peaks (FLOP/s and memory bandwidth: bench/report.py's limits). Prints one
JSON object (bench/gpu.sh stores it beside Hearth's).

    python3 bench/peer.py MODEL_DIR [--seq-len 512 --batch-size 4 --steps 3 --r 16]

Training: LoRA r (alpha 2r, dropout 0.05) on every linear layer but the head, as Hearth's
`all-linear`; AdamW; random token ids; the loss on every token. Two precisions: fp32 with
TF32 off, and bf16 (weights in bf16, the adapter in fp32 as PEFT keeps it, autocast).
Generation: a prompt of random ids, then greedy tokens one at a time through the KV cache
(the same loop as `hearth bench generate`), in fp32.
"""
import argparse
import inspect
import json
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def no_tf32():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")


def train(model_dir, device, precision, a):
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device)
    model.config.use_cache = False
    lora = LoraConfig(r=a.r, lora_alpha=2 * a.r, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    g = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, model.config.vocab_size, (a.batch_size, a.seq_len), generator=g).to(device)
               for _ in range(a.steps + a.warmup)]

    def step(ids):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for ids in batches[:a.warmup]:
        step(ids)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for ids in batches[a.warmup:]:
        step(ids)
    sync(device)
    secs = time.perf_counter() - start
    out = {
        "precision": precision,
        "tokens_per_s": a.steps * a.batch_size * a.seq_len / secs,
        "ms_per_step": secs * 1e3 / a.steps,
    }
    if device.type == "cuda":
        out["peak_gpu_memory_mib"] = torch.cuda.max_memory_allocated() / 2**20
    del model, opt
    return out


@torch.no_grad()
def generate(model_dir, device, a):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device).eval()
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, 300, (1, a.prompt_tokens), generator=g).to(device)
    model(ids[:, :8])  # warm-up
    sync(device)
    # the fastest of 3 prefills (as `hearth bench generate` times its own)
    prefill = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        out = model(ids, use_cache=True)
        nxt = out.logits[:, -1:].argmax(-1)
        sync(device)
        prefill = min(prefill, time.perf_counter() - start)
    # (transformers 5.24 renamed past_key_values to cache, the old name to go in 5.40: the
    # name this version's forward takes)
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    past = getattr(out, name)
    start = time.perf_counter()
    for _ in range(a.new_tokens):
        out = model(nxt, use_cache=True, **{name: past})
        past = getattr(out, name)
        nxt = out.logits[:, -1:].argmax(-1)
    sync(device)
    decode = time.perf_counter() - start
    del model
    return {"prefill_tokens_per_s": a.prompt_tokens / prefill, "decode_tokens_per_s": a.new_tokens / decode}


def matmul_peak(device, dtype, n, reps):
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync(device)
        best = min(best, (time.perf_counter() - start) / reps)
    return {"dtype": str(dtype).removeprefix("torch."), "n": n, "ms": best * 1e3, "gflops": 2 * n**3 / best / 1e9}


def bandwidth(device, mib, reps):
    """The practical memory bandwidth: a device-to-device copy (each byte read and written)."""
    a = torch.empty(mib << 18, device=device)
    b = torch.empty_like(a)
    b.copy_(a)
    sync(device)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(reps):
            b.copy_(a)
        sync(device)
        best = min(best, (time.perf_counter() - start) / reps)
    return {"mib": mib, "ms": best * 1e3, "gb_per_s": 2 * a.numel() * 4 / best / 1e9}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--r", type=int, default=16)
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--matmul-n", type=int, default=4096)
    p.add_argument("--only", choices=["train", "generate", "matmul"], action="append")
    a = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    no_tf32()
    only = set(a.only or ["train", "generate", "matmul"])
    out = {
        "bench": "peer",
        "model": a.model,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "settings": {"batch_size": a.batch_size, "seq_len": a.seq_len, "r": a.r, "steps": a.steps},
    }
    if "matmul" in only:
        reps = 20 if device.type == "cuda" else 1
        out["matmul"] = [matmul_peak(device, torch.float32, a.matmul_n, reps), matmul_peak(device, torch.bfloat16, a.matmul_n, reps)]
        out["bandwidth"] = bandwidth(device, 1024 if device.type == "cuda" else 128, reps)
    if "train" in only:
        out["train"] = [train(a.model, device, precision, a) for precision in ("fp32", "bf16")]
    if "generate" in only:
        out["generate"] = generate(a.model, device, a)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
