#!/usr/bin/env bash
# Prepares what bench/gpu.sh needs on a lent GPU machine, on the dev machine (it has no
# network and no Rust there): the release `hearth` binary in .carry/ and Debian's Vulkan
# loader in .gl/, both ignored by git and carried by the device call:
#
#   bench/prepare.sh
#   device run: command "bash bench/gpu.sh", carry [".carry", ".gl"], timeout_s 540
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hearth-target}"
for d in /.carry/ /.gl/; do grep -qxF "$d" .git/info/exclude || echo "$d" >> .git/info/exclude; done
cargo build --release -p hearth
mkdir -p .carry && cp "$CARGO_TARGET_DIR/release/hearth" .carry/hearth
if ! ls .gl/libvulkan1_*.deb >/dev/null 2>&1; then
    mkdir -p .gl /tmp/amd64/partial
    o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
    apt-get $o update -qq
    (cd .gl && apt-get $o download libvulkan1)
fi
du -sh .carry .gl
