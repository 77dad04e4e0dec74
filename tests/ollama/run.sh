#!/usr/bin/env bash
# Hearth's Ollama Modelfiles rendered by Go's text/template, as Ollama renders them
# (tests/ollama/check.py). Needs Go (Debian's golang-go); without it, says so and skips,
# except under CI=true, where that fails.
# Usage: tests/ollama/run.sh HEARTH_BINARY OUT_DIR [SMOLLM2_GGUF]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if ! command -v go >/dev/null; then
  if [ "${CI:-}" = "true" ]; then
    echo "ollama check: go is missing (apt-get install golang-go)" >&2
    exit 1
  fi
  echo "ollama check SKIPPED: go is missing (apt-get install golang-go)"
  exit 0
fi
mkdir -p "$2"
out="$(cd "$2" && pwd)"
(cd "$here" && go build -o "$out/render" render.go)
python3 "$here/check.py" "$1" "$out/render" "$out" "${@:3}"
