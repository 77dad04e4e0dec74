"""`--ollama` Modelfiles checked with Go's text/template, the engine Ollama runs them with.

For SmolLM2 (its own chat template, with a default system prompt) and the tiny qwen2 model
carrying Gemma 3's (system folded into the user turn), Phi-3's (EOS after a conversation)
and Qwen3's templates, `hearth export --format gguf --ollama` writes a GGUF and its
Modelfile. For each of several conversations, the prompt Ollama would build (render.go),
tokenized as Ollama does (BOS added when the GGUF says so), must be the same token ids as
Hearth's own chat template rendering. SmolLM3's template, which writes today's date, must
be refused with no files left behind.

Usage: python check.py HEARTH_BINARY RENDER_BINARY OUT_DIR [SMOLLM2_GGUF]
"""

import json
import os
import shutil
import subprocess
import sys

HEARTH, RENDER, OUT = sys.argv[1:4]
SMOLLM2 = sys.argv[4] if len(sys.argv) > 4 else None
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIX = os.path.join(ROOT, "tests", "fixtures")

CONVERSATIONS = [
    [{"role": "user", "content": "When are you open?"}],
    [{"role": "system", "content": "You answer for a bike shop.\nBe brief."}, {"role": "user", "content": "When are you open?"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"}, {"role": "user", "content": "Öffnungszeiten? 营业时间?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"}],
]

failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        failures.append(what)


def hearth(*args):
    return subprocess.run([HEARTH, *args], check=True, capture_output=True, text=True).stdout


def with_template(name):
    """The tiny qwen2 model with another family's chat template."""
    folder = os.path.join(OUT, f"tiny-{name}-template")
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(os.path.join(FIX, "tiny-qwen2"), folder)
    shutil.copy(os.path.join(FIX, "chat-templates", f"{name}.jinja"), os.path.join(folder, "chat_template.jinja"))
    return folder


def main():
    os.makedirs(OUT, exist_ok=True)
    cases = [(name, with_template(name)) for name in ["gemma3", "phi3", "qwen3"]]
    if SMOLLM2:
        cases.insert(0, ("smollm2", SMOLLM2))
    for name, model in cases:
        gguf = os.path.join(OUT, f"{name}.gguf")
        hearth("export", model, "--out", gguf, "--format", "gguf", "--dtype", "f16", "--ollama")
        modelfile = gguf[:-len(".gguf")] + ".Modelfile"
        with open(modelfile) as f:
            text = f.read()
        check(f"FROM ./{name}.gguf\n" in text and "PARAMETER stop" in text and "TEMPLATE \"\"\"" in text, f"{name}: the Modelfile has FROM, TEMPLATE and stop strings")
        for i, conv in enumerate(CONVERSATIONS):
            path = os.path.join(OUT, f"conversation-{i}.json")
            with open(path, "w") as f:
                json.dump(conv, f, ensure_ascii=False)
            want = json.loads(hearth("tokenize", gguf, "--messages", path, "--json"))
            prompt = subprocess.run([RENDER, modelfile, path], check=True, capture_output=True, text=True).stdout
            got = json.loads(hearth("tokenize", gguf, "--text", prompt, "--special", "--json"))
            check(got["ids"] == want["ids"], f"{name}, conversation {i}: Ollama's prompt is Hearth's ({len(want['ids'])} tokens)"
                  + ("" if got["ids"] == want["ids"] else f"\n  hearth: {want['text']!r}\n  ollama: {prompt!r}"))

    # a template Ollama's turns cannot express is refused, and nothing is written
    folder = with_template("smollm3")
    gguf = os.path.join(OUT, "smollm3.gguf")
    r = subprocess.run([HEARTH, "export", folder, "--out", gguf, "--format", "gguf", "--ollama"], capture_output=True, text=True)
    check(r.returncode != 0 and "date" in r.stderr and not os.path.exists(gguf), f"SmolLM3's dated template is refused: {r.stderr.strip()[:160]}")

    if failures:
        print(f"ollama check: {len(failures)} failed", flush=True)
        sys.exit(1)
    print("ollama check: all passed", flush=True)


main()
