#!/usr/bin/env bash
# Hearth's GGUF files in llama.cpp (tests/llama_cpp/check.mjs). Installs node-llama-cpp
# (its prebuilt CPU binaries come from npm); where npm cannot fetch it, says so and skips,
# except under CI=true, where that fails.
# Usage: tests/llama_cpp/run.sh HEARTH_BINARY OUT_DIR [SMOLLM2_GGUF]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# node-llama-cpp's prebuilt binaries take some 730 MB: a full disk, or a registry that drops
# the connection, shows here. Tried twice; what npm said, and the free space, are printed.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
install() { (cd "$here" && npm ci --no-audit --no-fund --ignore-scripts) >"$log" 2>&1; }
if ! install && ! install; then
  tail -n 15 "$log" >&2
  df -h "$here" >&2
  if [ "${CI:-}" = "true" ]; then
    echo "llama.cpp check: npm could not install node-llama-cpp (npm's last lines and the free disk space above)" >&2
    exit 1
  fi
  echo "llama.cpp check SKIPPED: npm could not install node-llama-cpp (no registry?)"
  exit 0
fi
node "$here/check.mjs" "$@"
