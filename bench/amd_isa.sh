#!/usr/bin/env bash
# What AMD's shader compiler makes of Hearth's kernels, on a machine with no AMD GPU: Mesa's
# RADV driver over its DRM shim (mesa-drm-shim's noop libamdgpu: a device that takes every
# call and runs nothing) compiles each kernel a `hearth bench` (ops, or train) launches with
# ACO, AMD's compiler in Mesa, as it would for that GPU. `--kernel-stats --kernel-ir` then read the
# driver's statistics (registers, subgroups per SIMD, spills, scratch) and its assembly, and
# bench/isa_loops.py tabulates each kernel's main loop by kind of instruction: how much of a
# stage of the reduction is multiply-adds, and how much the staging around them costs.
#
# Nothing runs, so the bench's times mean nothing (HEARTH_TUNE=0: nothing is tuned on them);
# a real GPU's compiler reads the same SPIR-V that NVIDIA's and Apple's do, so a loop that
# costs AMD many instructions per multiply-add is worth a look elsewhere, though each
# compiler schedules in its own way. Runs in tests/coop's trixie chroot (Mesa 26.1).
#
# usage: bench/amd_isa.sh HEARTH_BINARY OUT_DIR ops|train [that bench's arguments]   (as root)
#   e.g. ... ops --filter forward --shape 4096x4096x4096; ... train tests/fixtures/tiny-llama
#   (the shim gives no buffer over about 256 MiB: no head of 2048 × 49152, no `peak a + b`
#   past --quick's; a kernel that fails to compile stalls the run: run it under `timeout`)
#   GPUS="navi31 gfx1201" (the shim's names: navi31 is RDNA 3's RX 7900 XTX, gfx1201 RDNA 4)
# writes OUT_DIR/GPU.json (the bench's JSON), OUT_DIR/GPU/ (SPIR-V, NIR, ACO's IR and
# assembly per kernel) and OUT_DIR/GPU.md (the table), and prints the tables.
set -euo pipefail
cd "$(dirname "$0")/.."
hearth=$(realpath "$1")
out=$(realpath -m "$2")
shift 2
. tests/coop/trixie.sh
trixie_ready mesa-drm-shim
# (names of this run's own: another run, CI's tests/amd, may be using the chroot)
bin=hearth-isa-$$
cp "$hearth" "$root/opt/hearth/$bin"
trap 'rm -rf "$root/opt/hearth/$bin" "$root/tmp/$bin"' EXIT
mkdir -p "$out"
for gpu in ${GPUS:-navi31}; do
  rm -rf "$root/tmp/$bin" && mkdir -p "$root/tmp/$bin"
  trixie_run 'export VK_DRIVER_FILES=/usr/share/vulkan/icd.d/radeon_icd.json AMDGPU_GPU_ID=$1 LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libamdgpu_noop_drm_shim.so HEARTH_TUNE=0 MESA_SHADER_CACHE_DISABLE=true XDG_CACHE_HOME=/tmp/$2/cache && bin=$2 && shift 2 && /opt/hearth/$bin bench "$@" --json --kernel-stats --kernel-ir /tmp/$bin/ir > /tmp/$bin/bench.json' \
    "$gpu" "$bin" "$@"
  rm -rf "${out:?}/$gpu" && cp -r "$root/tmp/$bin/ir" "$out/$gpu" && cp "$root/tmp/$bin/bench.json" "$out/$gpu.json"
  python3 bench/isa_loops.py "$out/$gpu.json" "$out/$gpu" | tee "$out/$gpu.md"
done
