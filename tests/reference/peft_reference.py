"""LoRA training references from HF transformers + PEFT on the tiny fixtures.

For tests/fixtures/tiny-{llama,qwen2,qwen3,smollm3,gemma3,phi3} this writes tests/fixtures/peft/<model>/:
  data.jsonl          four prompt/completion records
  initial/            the starting adapter as PEFT saves it (A from PEFT's init; B drawn
                      at random so that the gradients of A are not zero at step one)
  trained/            the adapter after ten steps, as PEFT saves it
  reference.json      the token ids and loss masks of the data, the step-one LoRA gradients,
                      the ten per-step losses, the NLL of a text with the trained adapter,
                      and that text's logits from the base with it merged (merge_and_unload)

Training follows Hearth's recipe: each optimizer step sees two micro-batches of two
examples (gradient accumulation 2), the loss is the sum of token NLLs over the step divided
by the step's loss tokens, the gradient norm is clipped to 1.0, AdamW (lr 1e-2, weight
decay 0.01), linear schedule with 2 warmup steps over 10. Every step covers all four
examples, so the order of the examples does not change the result.

With --hearth-adapter DIR (a PEFT-format adapter that `hearth train` wrote for tiny-llama)
it loads that adapter with PeftModel.from_pretrained and records the NLL of the same text in
tests/fixtures/peft/tiny-llama/hearth_adapter.json.

    V/bin/python tests/reference/peft_reference.py [MODEL...]
    hearth train tests/fixtures/tiny-llama --data tests/fixtures/peft/tiny-llama/data.jsonl \
        --template "{prompt}{completion}" --out /tmp/hearth-adapter --max-steps 5 --lr 1e-2 \
        --r 4 --alpha 8 --batch-size 2 --seed 3
    V/bin/python tests/reference/peft_reference.py --hearth-adapter /tmp/hearth-adapter
"""
import argparse
import json
import shutil
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, get_scheduler

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RECORDS = [
    {"prompt": "Hello world, ", "completion": "tiny models are fun."},
    {"prompt": "The quick brown fox ", "completion": "jumps over the lazy dog."},
    {"prompt": "12345 ", "completion": "67890 text and more text"},
    {"prompt": "Hello tiny ", "completion": "world of text."},
]
TEXT = "The quick brown fox and the tiny models are fun. 12345"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# Phi-3 has fused layers: PEFT adapts them as they are
FUSED_TARGETS = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]
STEPS, LR, WD, WARMUP, CLIP = 10, 1e-2, 0.01, 2, 1.0


def tokenizer(src):
    # tokenizer.json as it is: AutoTokenizer would pick Qwen2Tokenizer for tiny-qwen2 and
    # replace the fixture's pre-tokenizer with Qwen2's own
    return PreTrainedTokenizerFast.from_pretrained(src)


def encode(tok, rec):
    # Hearth's custom template "{prompt}{completion}": the prompt as tokenizer(text) gives
    # it, then the response and the EOS token text without special tokens added
    p = tok(rec["prompt"])["input_ids"]
    r = tok(rec["completion"] + tok.eos_token, add_special_tokens=False)["input_ids"]
    return p + r, [0] * len(p) + [1] * len(r)


def save(model, dest, base_name):
    """save_pretrained, with the base model named by its path in the repository."""
    model.save_pretrained(dest)
    cfg = json.loads((dest / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = f"tests/fixtures/{base_name}"
    (dest / "adapter_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    (dest / "README.md").unlink(missing_ok=True)


def micro_loss(model, batch):
    """Σ NLL over the loss tokens of a padded micro-batch, and their count."""
    width = max(len(ids) for ids, _ in batch)
    ids = torch.zeros(len(batch), width, dtype=torch.long)
    att = torch.zeros(len(batch), width, dtype=torch.long)
    labels = torch.full((len(batch), width), -100)
    for i, (x, m) in enumerate(batch):
        ids[i, : len(x)] = torch.tensor(x)
        att[i, : len(x)] = 1
        labels[i, : len(x)] = torch.tensor([t if k else -100 for t, k in zip(x, m)])
    logits = model(input_ids=ids, attention_mask=att).logits[:, :-1]
    target = labels[:, 1:]
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100, reduction="sum")
    return nll, int((target != -100).sum())


def text_nll(model, tok):
    ids = torch.tensor([tok(TEXT)["input_ids"]])
    with torch.no_grad():
        return float(model(input_ids=ids, labels=ids).loss)


def merged_logits(adapter, src, tok):
    """The logits of TEXT from the base with the adapter merged in (merge_and_unload)."""
    base = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    merged = PeftModel.from_pretrained(base, adapter).merge_and_unload().eval()
    with torch.no_grad():
        logits = merged(torch.tensor([tok(TEXT)["input_ids"]])).logits[0]
    return [round(x, 7) for x in logits.flatten().tolist()]


def make(name):
    src = FIXTURES / name
    out = FIXTURES / "peft" / name
    # what this writes; hearth-adapter/ and hearth_adapter.json (--hearth-adapter) stay
    for sub in ["initial", "trained"]:
        shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    tok = tokenizer(src)
    base = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    torch.manual_seed(0)
    targets = FUSED_TARGETS if name == "tiny-phi3" else TARGETS
    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=targets, task_type="CAUSAL_LM")
    model = get_peft_model(base, cfg)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    save(model, out / "initial", name)
    (out / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    data = [encode(tok, r) for r in RECORDS]

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=WD)
    sched = get_scheduler("linear", opt, num_warmup_steps=WARMUP, num_training_steps=STEPS)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    losses, grads = [], {}
    model.train()
    for step in range(STEPS):
        micro = [data[0:2], data[2:4]]
        counted = sum(sum(m[1:]) for _, m in data)
        opt.zero_grad()
        total = 0.0
        for b in micro:
            nll, _ = micro_loss(model, b)
            (nll / counted).backward()
            total += float(nll)
        losses.append(total / counted)
        if step == 0:
            for n, p in zip(names, params):
                key = n.replace(".default", "")
                grads[key] = [round(x, 9) for x in p.grad.flatten().tolist()]
        torch.nn.utils.clip_grad_norm_(params, CLIP)
        opt.step()
        sched.step()
    model.eval()
    save(model, out / "trained", name)
    ref = {
        "records": RECORDS,
        "ids": [x for x, _ in data],
        "loss_mask": [m for _, m in data],
        "hyper": {"r": 4, "alpha": 8, "steps": STEPS, "lr": LR, "weight_decay": WD, "warmup": WARMUP, "max_grad_norm": CLIP,
                  "batch_size": 2, "grad_accum": 2, "schedule": "linear"},
        "losses": losses,
        "step1_grads": grads,
        "text": TEXT,
        "text_ids": tok(TEXT)["input_ids"],
        "trained_text_nll": text_nll(model, tok),
        "base_text_nll": text_nll(base.__class__.from_pretrained(src, dtype=torch.float32).eval(), tok),
        "merged_logits": merged_logits(out / "trained", src, tok),
    }
    (out / "reference.json").write_text(json.dumps(ref) + "\n")
    print(name, "losses", [round(x, 5) for x in losses], "trained NLL", ref["trained_text_nll"])


def hearth_adapter(path):
    src = FIXTURES / "tiny-llama"
    tok = tokenizer(src)
    base = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    model = PeftModel.from_pretrained(base, path).eval()
    rec = {"adapter": "tests/fixtures/peft/tiny-llama/hearth-adapter", "text": TEXT, "peft_text_nll": text_nll(model, tok)}
    dest = FIXTURES / "peft" / "tiny-llama" / "hearth-adapter"
    if Path(path).resolve() != dest.resolve():
        shutil.copytree(path, dest, dirs_exist_ok=True)
    (FIXTURES / "peft" / "tiny-llama" / "hearth_adapter.json").write_text(json.dumps(rec) + "\n")
    print("PEFT's NLL with Hearth's adapter", rec["peft_text_nll"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hearth-adapter")
    ap.add_argument("models", nargs="*", default=["tiny-llama", "tiny-qwen2", "tiny-qwen3", "tiny-smollm3", "tiny-gemma3", "tiny-phi3"])
    args = ap.parse_args()
    if args.hearth_adapter:
        hearth_adapter(args.hearth_adapter)
        return
    for name in args.models:
        make(name)


if __name__ == "__main__":
    main()
