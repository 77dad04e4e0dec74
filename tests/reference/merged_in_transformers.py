"""Loads Hearth's merged models in transformers and compares them with PEFT's merge.

For each tiny family, `hearth merge` of PEFT's trained adapter (tests/fixtures/peft/<model>/
trained) must be an HF folder that transformers loads, with the logits of PEFT's
merge_and_unload. (The committed test merged_models_of_each_family_give_peft_merged_logits
checks the numbers without Python; this checks that transformers reads the files.)

    cargo build -p hearth
    V/bin/python tests/reference/merged_in_transformers.py target/debug/hearth
"""
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MODELS = ["tiny-llama", "tiny-qwen2", "tiny-qwen3", "tiny-smollm3", "tiny-gemma3", "tiny-phi3"]


def main():
    hearth = sys.argv[1]
    for m in MODELS:
        src, adapter = FIXTURES / m, FIXTURES / "peft" / m / "trained"
        ids = torch.tensor([json.loads((FIXTURES / "peft" / m / "reference.json").read_text())["text_ids"]])
        with tempfile.TemporaryDirectory() as out:
            subprocess.run([hearth, "merge", str(src), "--adapter", str(adapter), "--out", out + "/merged"], check=True, capture_output=True)
            merged = AutoModelForCausalLM.from_pretrained(out + "/merged", dtype=torch.float32).eval()
            base = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
            peft = PeftModel.from_pretrained(base, adapter).merge_and_unload().eval()
            with torch.no_grad():
                diff = float((merged(ids).logits - peft(ids).logits).abs().max())
        print(f"{m}: {type(merged).__name__}, max |logit − PEFT merge_and_unload| = {diff:.1e}")
        assert diff < 1e-4, m


if __name__ == "__main__":
    main()
