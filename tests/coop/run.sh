#!/usr/bin/env bash
# The cooperative-matrix kernels (shaders/matmul_coop.wgsl) run on the CPU: Mesa's lavapipe
# offers VK_KHR_cooperative_matrix (8 × 8 × 8 products of f16 into f32, subgroups of 8) from
# Mesa 26.1, which Debian ships for trixie (trixie-backports) but not for the bookworm CI runs
# on. So a minimal trixie with that Mesa is kept (tests/coop/trixie.sh), and `hearth
# selftest`, the tile tuning (which times them: `bench tiles`), the matmul tests'
# cooperative-matrix tests, the quantized ones' (and their launches in blocks, which run on
# each kind of tiles) and PEFT parity through them (tiny-qwen3) run inside it, in a mount
# namespace of their own, with the clone bound at its path. It fails where the kernel is not
# offered (a test that skips would prove nothing). The same lavapipe has shader-f16 and Dawn
# takes it, so the page's kernels, its f16 ones included, are compiled by Dawn's Tint there
# too (tests/browser/shaders_dawn.mjs, with this machine's node; Chromium's SwiftShader has
# no f16).
#
# usage: tests/coop/run.sh HEARTH_BINARY MATMUL_TEST_BINARY QUANT_TEST_BINARY PEFT_PARITY_TEST_BINARY SHADERS_DIR   (as root)
# (SHADERS_DIR: the composed kernels, core's OUT_DIR/shaders; tests/browser's npm ci done)
set -euo pipefail
cd "$(dirname "$0")/../.."
hearth=$(realpath "$1")
matmul=$(realpath "$2")
quant=$(realpath "$3")
parity=$(realpath "$4")
shaders=$(realpath "$5")
. tests/coop/trixie.sh
trixie_ready
# This run's own copies, in a folder of its own: another run (CI's, a session's) may be using
# the chroot at the same time, and an executable that is running cannot be overwritten. The
# folder goes when the run ends (the test binaries are some 650 MB a set).
run=run-$$
mkdir -p "$root/opt/hearth/$run"
out=$(mktemp)
trap 'rm -rf "${root:?}/opt/hearth/$run" "$out"' EXIT
cp "$hearth" "$matmul" "$quant" "$parity" "$(command -v node)" "$root/opt/hearth/$run/"
cp -r "$shaders" "$root/opt/hearth/$run/shaders"
# Only lavapipe's driver is loaded (VK_DRIVER_FILES): with all of Mesa's, trixie's Vulkan loader
# loads and unloads the eight other drivers as each test's context enumerates the devices, and
# a test creating a context while another names a pipeline crashed inside the loader (about one
# run in ten of the quantized tests, which open contexts in parallel; seen under gdb:
# vkEnumeratePhysicalDevices' dlclose against vkSetDebugUtilsObjectNameEXT).
trixie_run 'export VK_DRIVER_FILES=/usr/share/vulkan/icd.d/lvp_icd.json && at=/opt/hearth/$1 && $at/hearth selftest && HEARTH_F16_MATMUL=1 $at/hearth bench tiles --quick --json && cd tests && export HEARTH_REQUIRE_GPU=1 && $at/$2 coop --nocapture && $at/$3 coop in_blocks --nocapture && $at/$4 cooperative --nocapture && cd .. && $at/node tests/browser/shaders_dawn.mjs $at/shaders' \
  "$run" "$(basename "$matmul")" "$(basename "$quant")" "$(basename "$parity")" 2>&1 | tee "$out"
grep -q "cooperative matrices f16 forwards and input gradients on matmul_coop.wgsl" "$out" || { echo "tests/coop: lavapipe offered no cooperative matrices in matmul_coop.wgsl's form"; exit 1; }
if grep -q "SKIPPED" "$out"; then echo "tests/coop: the cooperative-matrix tests skipped"; exit 1; fi
# (the matmul tests' four, the quantized ones' three, PEFT parity's two)
[ "$(grep "^test result: ok" "$out" | grep -o "[0-9]* passed" | tr '\n' ' ')" = "4 passed 3 passed 2 passed " ] || { echo "tests/coop: the cooperative-matrix tests failed"; exit 1; }
grep -q '"format":"f16 coop"' "$out" && grep -q '"coop_wide_outputs"' "$out" || { echo "tests/coop: the tile tuning did not time the cooperative-matrix kernels"; exit 1; }
grep -q "kernel files compile in Dawn's Tint (0 failed, 0 skipped)" "$out" || { echo "tests/coop: Dawn's Tint did not compile every page kernel"; exit 1; }
echo "tests/coop: passed"
