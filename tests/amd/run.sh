#!/usr/bin/env bash
# Hearth's kernels through AMD's shader compiler, with no GPU: bench/amd_isa.sh compiles every
# kernel that `bench ops` (f32, f16, each quantized format, their f16 tiles and cooperative
# matrices, in tiles of 64 and 128; the cooperative one a stage ahead too) and a training step
# (flash attention, norms, AdamW, ...) launch with Mesa's RADV and ACO for RDNA 3 (an RX 7900
# XTX) and RDNA 4 (gfx1201), over Mesa's DRM shim. Each must compile, keep its values in
# registers (no scratch memory, no vector register spilled) and compile in under 3 s: wgpu's
# zeroing of large workgroup arrays once made it 3.5 to 23 s a kernel (docs/PERF.md,
# 2026-12-05).
#
# usage: tests/amd/run.sh HEARTH_BINARY   (as root; in tests/coop's trixie chroot)
set -euo pipefail
cd "$(dirname "$0")/../.."
hearth=$(realpath "$1")
out=$(mktemp -d)
# (each run's statistics and assembly, some 300 MB: removed when it is done)
trap 'rm -rf "$out"' EXIT
export GPUS="navi31 gfx1201"
timeout 600 bench/amd_isa.sh "$hearth" "$out/ops" ops --quick --shape 256x256x256 --shape 2048x1536x576 >/dev/null
# the cooperative-matrix matmul with its stages loaded a stage ahead (in tiles of 64, where
# the context asks: HEARTH_COOP_PREFETCH=1), which holds a stage's values beside its sums
HEARTH_COOP_PREFETCH=1 HEARTH_TILES=64 timeout 600 bench/amd_isa.sh "$hearth" "$out/ahead" ops --quick --filter "f16 coop forward" --shape 2048x1536x576 >/dev/null
timeout 600 bench/amd_isa.sh "$hearth" "$out/train" train tests/fixtures/tiny-llama --seq-len 128 --batch-size 2 --steps 2 --warmup 1 >/dev/null
python3 - "$out"/ops/*.json "$out"/ahead/*.json "$out"/train/*.json <<'PY'
import json, sys
failed, seen, ahead = [], 0, 0
for path in sys.argv[1:]:
    stats = json.load(open(path))["kernel_stats"]
    gpu = stats.get("device", path)
    if not stats.get("kernels") or "note" in stats:
        failed.append(f"{path}: no statistics: {stats.get('note')}")
    for k in stats.get("kernels", []):
        seen += 1
        ahead += k["kernel"].endswith(", a stage ahead]")
        name = f"{gpu}: {k['kernel']}"
        if "error" in k:
            failed.append(f"{name}: {k['error']}")
            continue
        s = k["executables"][0]["statistics"]
        if s.get("Scratch size", 0) or s.get("Spilled VGPRs", 0):
            failed.append(f"{name}: {s.get('Scratch size')} bytes of scratch, {s.get('Spilled VGPRs')} VGPRs spilled")
        if k["compile_ms"] > 3000:
            failed.append(f"{name}: compiled in {k['compile_ms']:.0f} ms")
if ahead < 2:
    failed.append(f"the cooperative matmul a stage ahead compiled for {ahead} of the 2 GPUs")
for f in failed:
    print("tests/amd:", f)
if failed or seen < 150:
    sys.exit(f"tests/amd: {len(failed)} of {seen} kernels failed")
print(f"tests/amd: {seen} kernels compiled by ACO (RDNA 3 and 4), {ahead} of them a stage ahead, none spilled, each within 3 s")
PY
