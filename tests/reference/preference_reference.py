"""Preference-tuning references from TRL's DPOTrainer and ORPOTrainer on the tiny fixtures.

Writes tests/fixtures/preference/<case>/ for each case below:
  data.jsonl      four prompt/chosen/rejected records (strings)
  initial/        the starting PEFT adapter (r 4, alpha 8, dropout 0, all linear layers):
                  tests/fixtures/peft/<model>/initial, or that with B set to zero
  trained/        the adapter after ten steps, as TRL saves it
  reference.json  the pairs as TRL tokenized them (ids and completion masks), every
                  metric TRL logged at each of the ten steps, and TRL's evaluation of the
                  trained adapter on the same pairs

Training: every step sees all four pairs (batch 4, no accumulation, so the order does not
matter), AdamW lr 1e-2, no weight decay, linear decay over 10 steps without warmup,
gradient norm clipped to 1.0, f32 on the CPU.

DPO starts from a PEFT model: TRL then copies the adapter as the frozen reference ("ref"),
which is what Hearth does with a starting adapter. With B = 0 that copy is the base model,
the reference of a new adapter.

ORPO's NLL: TRL's ORPOTrainer takes it over the whole chosen sequence, prompt included;
Hearth, as for supervised data, over the completion tokens only. The ORPO case patches
TRL's NLL to the completion tokens (the labels TRL itself masks); all else is TRL's.

    V/bin/python tests/reference/preference_reference.py
"""
import json
import shutil
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from datasets import Dataset
from peft import PeftModel
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast
from trl import DPOConfig, DPOTrainer
from trl.experimental.orpo import ORPOConfig, ORPOTrainer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RECORDS = [
    {"prompt": "Question: When are you open?\nAnswer:", "chosen": " Tuesday to Saturday, nine to six.", "rejected": " Every day, all day."},
    {"prompt": "Question: Can I return a bike?\nAnswer:", "chosen": " Yes, within thirty days.", "rejected": " No."},
    {"prompt": "Question: Do you deliver?\nAnswer:", "chosen": " Free within twenty km.", "rejected": " Pick it up yourself, we never deliver anything."},
    {"prompt": "Question: Where is the shop?\nAnswer:", "chosen": " At 12 Canal Street.", "rejected": " Somewhere in town."},
]
STEPS, LR = 10, 1e-2
# (case, model, objective, settings, B of the starting adapter zeroed)
CASES = [
    ("tiny-llama-dpo-sigmoid", "tiny-llama", "dpo", {"beta": 0.1, "loss_type": ["sigmoid"]}, False),
    ("tiny-qwen2-dpo-sigmoid", "tiny-qwen2", "dpo", {"beta": 0.1, "loss_type": ["sigmoid"]}, True),
    ("tiny-llama-dpo-ipo", "tiny-llama", "dpo", {"beta": 0.1, "loss_type": ["ipo"]}, False),
    ("tiny-qwen2-dpo-hinge", "tiny-qwen2", "dpo", {"beta": 0.5, "loss_type": ["hinge"]}, False),
    ("tiny-llama-orpo", "tiny-llama", "orpo", {"beta": 0.1}, False),
]


def tokenizer(src):
    tok = PreTrainedTokenizerFast.from_pretrained(src)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def initial(model_name, dest, zero_b):
    src = FIXTURES / "peft" / model_name / "initial"
    shutil.copytree(src, dest)
    if zero_b:
        from safetensors.torch import load_file, save_file
        w = load_file(dest / "adapter_model.safetensors")
        save_file({k: torch.zeros_like(v) if "lora_B" in k else v for k, v in w.items()}, dest / "adapter_model.safetensors")


class CompletionNllORPOTrainer(ORPOTrainer):
    """TRL's ORPOTrainer with the NLL over the chosen completion tokens (see the top)."""

    def concatenated_forward(self, model, batch):
        out = super().concatenated_forward(model, batch)
        chosen_logits = out[2]  # (B, L − 1, V): the chosen rows, shifted
        labels = batch["chosen_labels"][:, 1:]
        labels = F.pad(labels, (0, chosen_logits.shape[1] - labels.shape[1]), value=-100)
        nll = F.cross_entropy(chosen_logits.reshape(-1, chosen_logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
        return (*out[:4], nll)


def common_args(out):
    return dict(output_dir=str(out), per_device_train_batch_size=4, per_device_eval_batch_size=4, gradient_accumulation_steps=1,
                max_steps=STEPS, learning_rate=LR, lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0,
                max_grad_norm=1.0, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, bf16=False,
                seed=0, disable_dropout=True)


def tokenized(trainer, objective):
    """The pairs as the trainer tokenized them: ids and completion masks, chosen and rejected."""
    pairs = []
    for ex in trainer.train_dataset:
        if objective == "dpo":
            p, c, r = ex["prompt_ids"], ex["chosen_ids"], ex["rejected_ids"]
            pairs.append({"chosen": p + c, "chosen_mask": [0] * len(p) + [1] * len(c),
                          "rejected": p + r, "rejected_mask": [0] * len(p) + [1] * len(r)})
        else:
            pairs.append({"chosen": ex["chosen_input_ids"], "chosen_mask": [int(l != -100) for l in ex["chosen_labels"]],
                          "rejected": ex["rejected_input_ids"], "rejected_mask": [int(l != -100) for l in ex["rejected_labels"]]})
    return pairs


def make(case, model_name, objective, settings, zero_b):
    dest = FIXTURES / "preference" / case
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    src = FIXTURES / model_name
    with open(dest / "data.jsonl", "w") as f:
        for r in RECORDS:
            f.write(json.dumps(r) + "\n")
    initial(model_name, dest / "initial", zero_b)
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, dest / "initial", is_trainable=True)
    tok = tokenizer(src)
    data = Dataset.from_list(RECORDS)
    with tempfile.TemporaryDirectory() as tmp:
        if objective == "dpo":
            args = DPOConfig(**common_args(tmp), max_length=None, **settings)
            trainer = DPOTrainer(model=model, args=args, train_dataset=data, eval_dataset=data, processing_class=tok)
        else:
            args = ORPOConfig(**common_args(tmp), max_length=512, max_completion_length=256, **settings)
            trainer = CompletionNllORPOTrainer(model=model, args=args, train_dataset=data, eval_dataset=data, processing_class=tok)
        pairs = tokenized(trainer, objective)
        trainer.train()
        steps = [h for h in trainer.state.log_history if "loss" in h and "step" in h]
        evaluation = trainer.evaluate()
    model.save_pretrained(dest / "trained")
    for d in ["initial", "trained"]:
        (dest / d / "README.md").unlink(missing_ok=True)
    keep = lambda h: {k: v for k, v in h.items() if isinstance(v, (int, float))}
    ref = {"model": model_name, "objective": objective, "settings": settings, "hyper": {"steps": STEPS, "lr": LR, "batch_pairs": 4, "max_grad_norm": 1.0},
           "pairs": pairs, "steps": [keep(h) for h in steps], "eval": keep(evaluation)}
    (dest / "reference.json").write_text(json.dumps(ref, indent=1))
    print(case, "step losses", [round(h["loss"], 5) for h in steps], "eval", {k: round(v, 4) for k, v in keep(evaluation).items() if "reward" in k})


def main():
    for case in CASES:
        make(*case)


if __name__ == "__main__":
    main()
