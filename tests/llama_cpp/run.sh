#!/usr/bin/env bash
# Hearth's GGUF files in llama.cpp (tests/llama_cpp/check.mjs). Installs node-llama-cpp
# (its prebuilt CPU binaries come from npm); where npm cannot fetch it, says so and skips,
# except under CI=true, where that fails.
# Usage: tests/llama_cpp/run.sh HEARTH_BINARY OUT_DIR [SMOLLM2_GGUF]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if ! (cd "$here" && npm ci --no-audit --no-fund --silent --ignore-scripts); then
  if [ "${CI:-}" = "true" ]; then
    echo "llama.cpp check: npm could not install node-llama-cpp" >&2
    exit 1
  fi
  echo "llama.cpp check SKIPPED: npm could not install node-llama-cpp (no registry?)"
  exit 0
fi
node "$here/check.mjs" "$@"
