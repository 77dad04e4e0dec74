#!/usr/bin/env bash
# Prepares what bench/gpu.sh needs on a lent GPU machine, on the dev machine (it has no
# network and no Rust there): the release `hearth` binary and six test binaries in .carry/
# and Debian's Vulkan loader in .gl/, all ignored by git and carried by the device call:
#
#   bench/prepare.sh
#   device run: command "bash bench/gpu.sh", carry [".carry", ".gl"], timeout_s 540
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hearth-target}"
for d in /.carry/ /.gl/; do grep -qxF "$d" .git/info/exclude || echo "$d" >> .git/info/exclude; done
cargo build --release -p hearth
# Stripped and xz-compressed (about a quarter of the size; bench/gpu.sh unpacks them with
# Python's lzma there): the binary, and the GPU kernels' correctness tests, to run against
# the CPU references on that GPU too.
rm -rf .carry && mkdir -p .carry/tests
pack() { strip -o "$2.tmp" "$1" && xz -6 -T2 -c "$2.tmp" > "$2.xz" && rm "$2.tmp"; }
pack "$CARGO_TARGET_DIR/release/hearth" .carry/hearth
cargo test -p hearth-tests --no-run --message-format=json 2>/dev/null \
    | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] in ("matmul", "quant", "ops", "tiny_models", "peft_parity", "run_engine"):
        print(m["target"]["name"], m["executable"])' \
    | while read -r name exe; do pack "$exe" ".carry/tests/$name"; done
if ! ls .gl/libvulkan1_*.deb >/dev/null 2>&1; then
    mkdir -p .gl /tmp/amd64/partial
    o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
    apt-get $o update -qq
    (cd .gl && apt-get $o download libvulkan1)
fi
du -sh .carry .gl
# The device tool carries at most 64 MiB: the working tree and these together.
total=$(( $(git ls-files -z | xargs -0 cat | wc -c) + $(du -sb .carry .gl | awk '{s += $1} END {print s}') ))
echo "to carry: $((total >> 20)) MiB of 64"
[ "$total" -lt $((64 << 20)) ] || { echo "over the device tool's 64 MiB: carry fewer test binaries" >&2; exit 1; }
