#!/usr/bin/env bash
# Hearth and PyTorch + PEFT side by side on one GPU: the script a session with a lent GPU
# machine runs (docs/PERF.md, "The GPU script"). It builds nothing: bench/prepare.sh put the
# `hearth` binary in .carry/ and the Vulkan loader in .gl/ on the dev machine. It makes the
# models here (exact configs, random weights), runs every bench with a time limit so that
# the whole script ends within BUDGET seconds of its start (8 minutes; with the machine's start, about 10 of device time), and writes three files into $OUT (the device
# tool returns at most 8): results.json (every bench's JSON), report.md (the ratios, for
# docs/PERF.md) and log.txt (progress, stderr and the tests' summaries). The per-bench JSON
# files stay in $WORK.
set -u
# BUDGET counts from here: selftest's first compiles and tuning (a minute or more on a fresh
# machine) included, so that the call's timeout holds however long they take
START=$(date +%s)
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/hearth-bench}"
WORK="${WORK:-/tmp/hearth-bench-work}"
# bench/prepare.sh's binaries, xz-compressed to fit the device call's 64 MiB, unpacked here
CARRY="${CARRY:-/tmp/hearth-carry}"
HEARTH="${HEARTH:-$CARRY/hearth}"
MODELS="${MODELS:-/tmp/hearth-bench-models}"
# PEER=0: no PyTorch + PEFT runs (where an earlier call's results.json has them).
# QUICK=1: a dry run of the whole script on a CPU emulator (small shapes, one model,
# longer limits); the device run uses the defaults.
if [ "${QUICK:-0}" = 1 ]; then
    SEQ=64 BATCH=1 STEPS=1 NEW=4 LONG_PROMPT=256 MODEL_LIST=smollm2-135m OPS_ARGS="--quick" TILES_ARGS="--quick" SLOW=20
    CHECKS_SHAPES="--shape 64x64x4096 --shape 512x576x576" COOP_SHAPES="--shape 256x256x256"
    REGISTER_SHAPES="--shape 256x256x256 --shape 512x576x576" STATS_SHAPE="--shape 256x256x256" COLUMNS_SHAPES="--shape 256x256x256"
    PROBE_SHAPES="--shape 256x256x256"
    # (a CPU's bf16 matmul at 4096³ takes minutes; 8 answers of 64 tokens one at a time, more)
    PEER_ARGS="--matmul-n 1024" SERVE_LOAD="4 8 1,4"
else
    SEQ=512 BATCH=4 STEPS=3 NEW=64 LONG_PROMPT=2048 MODEL_LIST="smollm2-135m qwen2.5-0.5b qwen3-0.6b" OPS_ARGS="--reps 3" TILES_ARGS="" SLOW=1
    CHECKS_SHAPES="--shape 64x64x4096 --shape 2048x1536x576 --shape 4096x4096x4096"
    REGISTER_SHAPES="--shape 4096x4096x4096 --shape 2048x1536x576 --shape 2048x576x1536" STATS_SHAPE="--shape 2048x1536x576"
    COLUMNS_SHAPES="--shape 4096x4096x4096 --shape 2048x1536x576 --shape 2048x576x1536 --shape 2048x49152x576"
    PROBE_SHAPES="--shape 4096x4096x4096 --shape 2048x1536x576 --shape 2048x49152x576"
    COOP_SHAPES="--shape 2048x576x576 --shape 2048x1536x576 --shape 2048x576x1536 --shape 4096x4096x4096"
    PEER_ARGS="" SERVE_LOAD="8 64 1,4,8,16"
fi
# PEFT's runs keep every activation (no gradient checkpointing): Hearth's too, where its default
# (auto) would recompute the forward for Qwen's 4 × 512 tokens (past 4 GiB of activations)
TRAIN_SHAPE="--seq-len $SEQ --batch-size $BATCH --gradient-checkpointing off"
# SmolLM2's step with its kernels timed also lists what the GPU's compiler made of each kernel
# (registers, spills: the driver's statistics) and writes the driver's text of each (its IR, its
# machine code, where it gives them), packed into $OUT/kernel-ir.tar.xz at the end
KERNEL_STATS="--kernel-stats --kernel-ir $WORK/kernel-ir"
# the f32 forward in the tiles its probes run in (128 × 128, loaded in turn, 8 steps), so that
# ops-probes' rows compare one kernel with its probes whatever the tuning chose
PROBED_TILES="HEARTH_KERNELS=gpu HEARTH_TILES=128 HEARTH_TILE_PREFETCH=0 HEARTH_TILE_STEPS=8 HEARTH_TILE_COLUMNS=128"
rm -rf "$WORK"
mkdir -p "$OUT" "$WORK"
LOG="$OUT/log.txt"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1

python3 - "$CARRY" <<'PY'
import lzma, os, pathlib, sys
dest = pathlib.Path(sys.argv[1])
for src in pathlib.Path(".carry").rglob("*.xz"):
    out = dest / src.relative_to(".carry").with_suffix("")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(lzma.decompress(src.read_bytes()))
    os.chmod(out, 0o755)
PY
if [ -d .gl ] && ! ldconfig -p | grep -q libvulkan.so.1; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
fi
gpu=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)
printf '{"date": "%s", "gpu": "%s", "driver": "%s"}\n' "$(date -u +%F)" "${gpu%%,*}" "${gpu##*, }" > "$WORK/env.json"
echo "== $(date -u +%T) $gpu" | tee -a "$LOG"
# try_icd MANIFEST LIBRARY_PATH: `hearth selftest` (into the log: the adapter, its kernel paths
# and the kernel checks) with that Vulkan ICD manifest (none: the loader's own search) and
# library path; false where it found no adapter, else both are kept for every later command.
# (selftest runs under a limit of its own: its kernel checks are the first launches of the
# cooperative-matrix kernels on any GPU, and a hang there must not take the device call's time.
# On a fresh machine it also compiles most kernels for the first time, with the tile tuning's:
# NVIDIA's compiler took 0.8-1.3 s for each variant of the tiles of 128, and the H100's first
# selftest ran past 60 s; the driver keeps them on disk for every later command.)
try_icd() {
    echo "== Vulkan ICD: ${1:-none (the loader searches)}${2:+, LD_LIBRARY_PATH=$2}" | tee -a "$LOG"
    env -u VK_DRIVER_FILES ${1:+VK_DRIVER_FILES=$1} ${2:+LD_LIBRARY_PATH=$2} \
        timeout $((150 * SLOW)) "$HEARTH" selftest > "$WORK/selftest.txt" 2>&1
    local rc=$?
    cat "$WORK/selftest.txt" >> "$LOG"
    grep -q "no usable GPU adapter" "$WORK/selftest.txt" && return 1
    [ $rc -eq 0 ] || echo "selftest failed or timed out" | tee -a "$LOG"
    if [ -n "$1" ]; then export VK_DRIVER_FILES="$1"; else unset VK_DRIVER_FILES; fi
    [ -z "$2" ] || export LD_LIBRARY_PATH="$2"
}
# The NVIDIA driver's Vulkan ICD. On a Firecracker machine (2026-12-04) the manifest that the
# driver's folder and the image both hold (libGLX_nvidia.so.0) gave no adapter ("Could not get
# 'vkCreateInstance' via 'vk_icdGetInstanceProcAddr'"), also by its full path: so the driver's
# headless library (libEGL_nvidia.so.0, which exports the same entry points) too, and first
# the modeset device that NVIDIA's Vulkan driver opens, where the machine lacks it.
nv=/usr/local/nvidia
if [ -e /dev/nvidiactl ] && [ ! -e /dev/nvidia-modeset ]; then
    { PATH="$PATH:$nv/bin" nvidia-modprobe -m || mknod -m 666 /dev/nvidia-modeset c 195 254; } >> "$LOG" 2>&1
fi
for lib in GLX EGL; do
    printf '{"file_format_version": "1.0.1", "ICD": {"library_path": "%s", "api_version": "1.3.0"}}\n' \
        "$nv/lib64/lib${lib}_nvidia.so.0" > "$WORK/nvidia_icd_$lib.json"
done
if ! { { [ -n "${VK_DRIVER_FILES:-}" ] && try_icd "$VK_DRIVER_FILES" ""; } \
    || try_icd "" "" \
    || try_icd "$WORK/nvidia_icd_GLX.json" "$nv/lib64" \
    || try_icd "$WORK/nvidia_icd_EGL.json" "$nv/lib64"; }; then
    # Without an adapter nothing below measures Hearth: say what the loader saw, and stop.
    {
        echo "== no adapter"
        cat /usr/share/vulkan/icd.d/nvidia_icd.json "$nv/share/vulkan/icd.d/nvidia_icd.json"
        ls -la /usr/lib/libGLX_nvidia* /usr/lib/libnvidia-glcore* /usr/share/vulkan/icd.d
        ls "$nv/lib64" | grep -E 'GLX|glcore|glvk|gpucomp|vulkan|egl'
        ldd "$nv/lib64/libGLX_nvidia.so.0"
        cat /proc/driver/nvidia/version
        ls -la /dev/nvidia*
        grep -i nvidia /proc/modules /proc/devices
        ls "$nv/bin" "$nv/modules"/*
        VK_LOADER_DEBUG=error,warn,driver LD_LIBRARY_PATH="$nv/lib64" VK_DRIVER_FILES="$WORK/nvidia_icd_EGL.json" \
            timeout 30 "$HEARTH" selftest 2>&1 | head -40
    } >> "$LOG" 2>&1
    exit 1
fi

# The whole script ends BUDGET seconds after its start (the device call's timeout should leave
# a minute more): each step's limit is cut to what is left, keeping 15 s for the report, and the
# benches leave TESTS_RESERVE seconds to the test binaries at the end (on the first H200 run
# the benches took it all, and no test ran).
BUDGET="${BUDGET:-$((480 * SLOW))}"
case "${FOCUS:-}" in
    kernels) TESTS_RESERVE="${TESTS_RESERVE:-200}" ;;
    loads) TESTS_RESERVE="${TESTS_RESERVE:-120}" ;;
    attention) TESTS_RESERVE="${TESTS_RESERVE:-120}" ;;
    *) TESTS_RESERVE="${TESTS_RESERVE:-75}" ;;
esac
TESTS_RESERVE=$((TESTS_RESERVE * SLOW))
# the test binaries to run at the end, quant last (FOCUS=attention: those whose tests train)
if [ "${FOCUS:-}" = attention ]; then
    TESTS="${TESTS:-ops peft_parity tiny_models run_engine}"
else
    TESTS="${TESTS:-$(ls "$CARRY"/tests 2>/dev/null | grep -v '^quant$') quant}"
fi
DEADLINE=$((START + BUDGET))
# The GPU's clocks, P-state, power and load every 200 ms while the benches run (clocks.csv;
# report.md gives each step's median): a figure low by a constant factor may be a GPU that
# did not clock up, not its kernels. (The reasons a clock is held down, where the driver
# names that field; nvidia-smi refuses a query with a field it does not know.)
clocks_pid=
if command -v nvidia-smi >/dev/null; then
    fields=timestamp,pstate,clocks.sm,clocks.mem,clocks.max.sm,power.draw,utilization.gpu,temperature.gpu
    nvidia-smi --query-gpu=$fields,clocks_event_reasons.active --format=csv,noheader,nounits >/dev/null 2>&1 && fields=$fields,clocks_event_reasons.active
    echo "$fields" > "$WORK/clocks.csv"
    nvidia-smi --query-gpu=$fields --format=csv,noheader,nounits -lms 200 >> "$WORK/clocks.csv" 2>> "$LOG" &
    clocks_pid=$!
fi
# left [RESERVE]: seconds left before the deadline, less RESERVE
left() { echo $((DEADLINE - $(date +%s) - 15 - ${1:-0})); }

# run NAME SECONDS COMMAND...: the command's stdout into $WORK/NAME.json, its stderr into the
# log; a failure, a timeout or no time left leaves NAME.json empty (report.md says so).
run() {
    local name=$1 limit=$(($2 * SLOW))
    shift 2
    [ "$(left "$TESTS_RESERVE")" -lt "$limit" ] && limit=$(left "$TESTS_RESERVE")
    if [ "$limit" -le 0 ]; then
        echo "== $name skipped: out of time" | tee -a "$LOG"
        : > "$WORK/$name.json"
        return
    fi
    echo "== $(date -u +%T) $name (limit ${limit}s): $*" | tee -a "$LOG"
    local start
    start=$(date +%s.%N)
    timeout "$limit" "$@" > "$WORK/$name.json" 2>> "$LOG"
    local rc=$?
    # (the step's time window, for its clocks)
    printf '%s\t%s\t%s\n' "$name" "$start" "$(date +%s.%N)" >> "$WORK/steps.tsv"
    [ $rc -eq 0 ] || echo "   $name failed: exit $rc" | tee -a "$LOG"
}

# FOCUS=kernels: a short call (some 4 minutes) after a full one: where a training step's and
# a prompt's time goes, each launch timed in the step (--kernel-times), SmolLM2's and
# Qwen2.5's, then the tests.
if [ "${FOCUS:-}" = kernels ]; then
    # the tuning selftest made (its timings, the thin products' and the lm_head's among them),
    # as report.md's tiles tables: the newest file without the cooperative matrices' threshold
    for f in $(ls -t "${XDG_CACHE_HOME:-$HOME/.cache}"/hearth/tuning/*.json 2>/dev/null); do
        grep -q '"coop_wide_outputs"' "$f" || { cp "$f" "$WORK/tiles.json"; break; }
    done
    [ -f "$WORK/tiles.json" ] || echo "   no tuning kept by selftest" | tee -a "$LOG"
    run make-models 60 python3 bench/make_models.py "$MODELS" smollm2-135m qwen2.5-0.5b
    rm -f "$WORK/make-models.json"
    for model in smollm2-135m qwen2.5-0.5b; do
        run "train-$model-f32" 30 "$HEARTH" bench train "$MODELS/$model" --quant f32 $TRAIN_SHAPE --steps $STEPS --json
        run "kernels-$model" 30 "$HEARTH" bench train "$MODELS/$model" --quant f32 $TRAIN_SHAPE --steps 1 --kernel-times --json
        run "decode-kernels-$model" 15 "$HEARTH" bench generate "$MODELS/$model" --prompt-tokens 128 --new-tokens $NEW --kernel-times --json
        # LoRA's thin products split as the other launches, not as the tuning chose for them
        # apart (its timings: tiles.json's thin_timed; the kernels' grids 1 × 32 × parts)
        run "train-$model-f32-thin-same" 30 env HEARTH_THIN_SPLIT=same "$HEARTH" bench train "$MODELS/$model" --quant f32 $TRAIN_SHAPE --steps $STEPS --json
    done
elif [ "${FOCUS:-}" = loads ]; then
    # FOCUS=loads: a short call (some 5 minutes) for the changes no GPU has run yet: the tiles
    # tuned afresh (the order of loads, 16 steps, 64 columns), the GPU's own peaks and every
    # matmul (ops), where the f32 forward's time goes (its probes), what the GPU's compiler
    # made of the kernels (SmolLM2's step with its kernels timed, Q4_1's, the tiles of 128 ×
    # 64), the register-blocked kernels, SmolLM2's step in each order of loads and 64 columns
    # wide, Qwen2.5's (its head in whole tiles of rows), then the tests; the most wanted
    # first, where the budget runs short
    run tiles 20 "$HEARTH" bench tiles --json $TILES_ARGS
    run make-models 60 python3 bench/make_models.py "$MODELS" smollm2-135m qwen2.5-0.5b
    rm -f "$WORK/make-models.json"
    run ops 75 "$HEARTH" bench ops --json $OPS_ARGS
    # where the f32 forward's time goes: its probes without the loads, without the staging
    run ops-probes 20 env $PROBED_TILES "$HEARTH" bench ops --json --filter "f32 forward" --probes --reps 3 $PROBE_SHAPES $KERNEL_STATS
    run kernels-smollm2-135m 30 "$HEARTH" bench train "$MODELS/smollm2-135m" --quant f32 $TRAIN_SHAPE --steps 1 --kernel-times $KERNEL_STATS --json
    # the head's products as a step runs them, in chunks of rows (SmolLM2: 256 of its 49,152
    # words; Qwen2.5: 128 of 151,936), against the whole micro-batch's 2,048 rows at once
    run ops-head 20 "$HEARTH" bench ops --json --filter "f32" --reps 3 --shape 256x49152x576 --shape 2048x49152x576 --shape 128x151936x896 --shape 512x151936x896
    # what the GPU's compiler made of the quantized kernels (QLoRA's base: Q4_1's tiles, f16
    # tiles and cooperative matrices) at one of SmolLM2's shapes
    run ops-stats 20 "$HEARTH" bench ops --json --filter q4_1 --reps 1 $STATS_SHAPE $KERNEL_STATS
    # the f32 tiles of 128 rows by 64 columns (8 × 4 outputs an invocation), with what the
    # compiler made of them
    run ops-columns64 20 env HEARTH_TILE_COLUMNS=64 HEARTH_TILES=128 "$HEARTH" bench ops --json --filter "f32" --reps 3 $COLUMNS_SHAPES $KERNEL_STATS
    # the f32 tiles of 128 kept twice in workgroup memory (one barrier per iteration)
    run ops-buffers2 20 env HEARTH_TILE_BUFFERS=2 HEARTH_TILES=128 "$HEARTH" bench ops --json --filter "f32" --reps 3 $COLUMNS_SHAPES $KERNEL_STATS
    run train-smollm2-135m-f32 30 "$HEARTH" bench train "$MODELS/smollm2-135m" --quant f32 $TRAIN_SHAPE --steps $STEPS --json
    for knob in columns64:HEARTH_TILE_COLUMNS=64 buffers2:HEARTH_TILE_BUFFERS=2 ahead:HEARTH_TILE_PREFETCH=1 in-turn:HEARTH_TILE_PREFETCH=0; do
        run "train-smollm2-135m-f32-${knob%%:*}" 30 env "${knob#*:}" "$HEARTH" bench train "$MODELS/smollm2-135m" --quant f32 $TRAIN_SHAPE --steps $STEPS --json
    done
    run ops-register 20 env HEARTH_KERNELS=llvmpipe "$HEARTH" bench ops --json --filter "f32 forward" --reps 3 $REGISTER_SHAPES
    run train-qwen2.5-0.5b-f32 30 "$HEARTH" bench train "$MODELS/qwen2.5-0.5b" --quant f32 $TRAIN_SHAPE --steps $STEPS --json
    run train-smollm2-135m-q4_1 30 "$HEARTH" bench train "$MODELS/smollm2-135m" --quant q4_1 $TRAIN_SHAPE --steps $STEPS --json
    run kernels-qwen2.5-0.5b 30 "$HEARTH" bench train "$MODELS/qwen2.5-0.5b" --quant f32 $TRAIN_SHAPE --steps 1 --kernel-times --json
    # the first half of each example a prompt (no loss), whose tokens the head skips
    run train-smollm2-135m-prompt-half 30 "$HEARTH" bench train "$MODELS/smollm2-135m" --quant f32 $TRAIN_SHAPE --steps $STEPS --prompt-share 0.5 --json
elif [ "${FOCUS:-}" = attention ]; then
    # FOCUS=attention: a short call: each model's training step with the flash attention
    # kernels (the default) against attention as batched matmuls (not with AB=0), where
    # SmolLM2's and Qwen2.5's steps go, SmolLM2's quantized bases, Qwen2.5's prompt and
    # decoding, then the tests that train (TESTS below)
    run make-models 90 python3 bench/make_models.py "$MODELS" $MODEL_LIST
    rm -f "$WORK/make-models.json"
    for model in $MODEL_LIST; do
        run "train-$model-f32" 30 "$HEARTH" bench train "$MODELS/$model" --quant f32 $TRAIN_SHAPE --steps $STEPS --json
        [ "${AB:-1}" = 0 ] || run "train-$model-f32-attention-matmul" 30 env HEARTH_ATTENTION=matmul "$HEARTH" bench train "$MODELS/$model" --quant f32 $TRAIN_SHAPE --steps $STEPS --json
        [ "$model" = qwen3-0.6b ] || run "kernels-$model" 30 "$HEARTH" bench train "$MODELS/$model" --quant f32 $TRAIN_SHAPE --steps 1 --kernel-times --json
    done
    for base in q4_1 nf4; do
        run "train-smollm2-135m-$base" 30 "$HEARTH" bench train "$MODELS/smollm2-135m" --quant $base $TRAIN_SHAPE --steps $STEPS --json
    done
    run generate-qwen2.5-0.5b 20 "$HEARTH" bench generate "$MODELS/qwen2.5-0.5b" --prompt-tokens 128 --new-tokens $NEW --batch 8 --json
else
# The issue's figures first: each model's training step on each base, its generation and the
# peers' on the same shapes (PyTorch + PEFT, transformers' generate, torch's matmuls at
# 4096³), every matmul (ops) after the first model's; the diagnostics after them, so that a
# budget cut short drops diagnostics, not ratios.
# the tile size tuned for this GPU, measured afresh and kept: every later command takes it
# (selftest above tuned it once already; the two measurements also show their noise)
run tiles 20 "$HEARTH" bench tiles --json $TILES_ARGS
# and on a context with cooperative matrices (HEARTH_F16_MATMUL=1), which times theirs too and
# keeps a tuning of its own for the f16-matmul runs below
run tiles-coop 30 env HEARTH_F16_MATMUL=1 "$HEARTH" bench tiles --json $TILES_ARGS
run make-models 120 python3 bench/make_models.py "$MODELS" $MODEL_LIST
rm -f "$WORK/make-models.json"
for model in $MODEL_LIST; do
    for base in f32 q4_1 nf4; do
        run "train-$model-$base" 30 "$HEARTH" bench train "$MODELS/$model" --quant "$base" $TRAIN_SHAPE --steps $STEPS --json
    done
    run "generate-$model" 20 "$HEARTH" bench generate "$MODELS/$model" --prompt-tokens 128 --new-tokens $NEW --batch 8 --json
    [ "${PEER:-1}" = 0 ] || run "peer-$model" 60 python3 bench/peer.py "$MODELS/$model" --seq-len $SEQ --batch-size $BATCH --steps $STEPS --new-tokens $NEW $PEER_ARGS
    # every matmul (the 4096³ figures against torch's) after the first model's (SmolLM2's: the
    # issue's training target), before the larger models' figures, which only say how far
    # those models are from their peers
    [ "$model" != "${MODEL_LIST%% *}" ] || run ops 75 "$HEARTH" bench ops --json $OPS_ARGS
done
# what the GPU's compiler made of the quantized kernels (QLoRA's base: Q4_1's tiles, f16
# tiles and cooperative matrices) at one of SmolLM2's shapes
run ops-stats 20 "$HEARTH" bench ops --json --filter q4_1 --reps 1 $STATS_SHAPE $KERNEL_STATS
# Where the f32 forward's time goes, with what the compiler made of each: its probes (tiles
# of 128 × 128 loaded in turn, their sums counted as the forward's) load from memory in the
# first iteration only, or stage in it only (the inner loop alone)
run ops-probes 20 env $PROBED_TILES "$HEARTH" bench ops --json --filter "f32 forward" --probes --reps 3 $PROBE_SHAPES $KERNEL_STATS
# The same for the cooperative-matrix forwards (tiles of 128), with what the compiler made of
# them: the probe's inner loop alone against the forward, and `peak coop` (ops) the products
# alone; the f16 weights' and the quantized ones' forwards beside them (the filter's)
run ops-coop-probes 20 env HEARTH_TILES=128 "$HEARTH" bench ops --json --filter "f16 coop forward" --probes --reps 3 $PROBE_SHAPES $KERNEL_STATS
# The cooperative-matrix forwards in tiles of 64 with each stage's values loaded during the
# last stage's products (HEARTH_COOP_PREFETCH=1) against loaded just before they are staged
# (the default), with what the compiler made of each (registers, spills); the f16 weights' and
# the quantized ones' forwards, which stage in turn either way, beside them as a control
for ahead in 0 1; do
    run "ops-coop64-ahead$ahead" 20 env HEARTH_TILES=64 HEARTH_COOP_PREFETCH=$ahead "$HEARTH" bench ops --json --filter "f16 coop forward" --reps 3 $COOP_SHAPES $KERNEL_STATS
done
# The f32 matmul's cost against each of M·N and K alone: a fixed cost per launch shows as
# equal times down the sweep.
run ops-sweep 20 "$HEARTH" bench ops --json --filter "f32 forward" --reps 3 --shape 64x64x8 --shape 64x64x4096 --shape 4096x4096x8 --shape 1024x1024x1024 --shape 2048x2048x2048
# the same f32 forwards with every one of wgpu's safeguards (the loop counters too), and with none
run ops-checks-all 20 env HEARTH_SHADER_CHECKS=1 "$HEARTH" bench ops --json --filter "f32 forward" --reps 3 $CHECKS_SHAPES
run ops-checks-none 20 env HEARTH_SHADER_CHECKS=0 "$HEARTH" bench ops --json --filter "f32 forward" --reps 3 $CHECKS_SHAPES
# the f32 forward on the register-blocked kernels that CPU emulators get (matmul.wgsl: each
# invocation reads its operands from memory, no workgroup tiles, no barriers)
run ops-register 20 env HEARTH_KERNELS=llvmpipe "$HEARTH" bench ops --json --filter "f32 forward" --reps 3 $REGISTER_SHAPES
# the f32 matmuls in tiles of 128 staging 16 reduction steps per iteration (the ops table: 8)
run ops-steps16 20 env HEARTH_TILE_STEPS=16 HEARTH_TILES=128 "$HEARTH" bench ops --json --filter "f32" --reps 3 --shape 4096x4096x4096 --shape 2048x1536x576 --shape 2048x576x1536
# in tiles of 128 rows by 64 columns (8 × 4 outputs an invocation: fewer registers), with what
# the compiler made of them
run ops-columns64 20 env HEARTH_TILE_COLUMNS=64 HEARTH_TILES=128 "$HEARTH" bench ops --json --filter "f32" --reps 3 $COLUMNS_SHAPES $KERNEL_STATS
# the tiles of 128 kept twice in workgroup memory, one written while the other is summed (one
# barrier per iteration, not two), with what the compiler made of them
run ops-buffers2 20 env HEARTH_TILE_BUFFERS=2 HEARTH_TILES=128 "$HEARTH" bench ops --json --filter "f32" --reps 3 $COLUMNS_SHAPES $KERNEL_STATS
# LoRA's thin matmuls at 4 × 512 tokens, r 16 (their weight gradients take the split reduction)
run ops-lora 20 "$HEARTH" bench ops --json --filter "f32" --reps 3 --shape 2048x16x576 --shape 2048x576x16 --shape 2048x16x1536 --shape 2048x1536x16
model=smollm2-135m
run "kernels-$model" 30 "$HEARTH" bench train "$MODELS/$model" --quant f32 $TRAIN_SHAPE --steps 1 --kernel-times $KERNEL_STATS --json
# training attention in the tiled attention kernels and as batched matmuls, against the flash
# kernels (the default)
for attention in tiled matmul; do
    run "train-$model-f32-attention-$attention" 30 env HEARTH_ATTENTION=$attention "$HEARTH" bench train "$MODELS/$model" --quant f32 $TRAIN_SHAPE --steps $STEPS --json
done
# the kernels with each of wgpu's safeguards against the default (bounds checks and zeroed
# workgroup memory, no loop counters): all three, without the bounds checks, without the
# zeroing, none
for checks in all:1 no-bounds:zeroing no-zeroing:bounds none:0; do
    run "train-$model-f32-checks-${checks%%:*}" 30 env HEARTH_SHADER_CHECKS="${checks#*:}" "$HEARTH" bench train "$MODELS/$model" --quant f32 $TRAIN_SHAPE --steps $STEPS --json
done
# f16 matmuls: forwards and input gradients (their rows scaled), the f32 base's and the
# quantized one's, on cooperative matrices where the GPU has them, else in f16 tiles; where it
# has shader-f16 (else the f32 runs)
for base in f32 q4_1; do
    run "train-$model-$base-f16-matmuls" 30 env HEARTH_F16_MATMUL=1 "$HEARTH" bench train "$MODELS/$model" --quant $base $TRAIN_SHAPE --steps $STEPS --json
done
# where a prompt's and a decoded token's time goes (each launch timed)
run "decode-kernels-$model" 15 "$HEARTH" bench generate "$MODELS/$model" --prompt-tokens 128 --new-tokens $NEW --kernel-times --json
# decoding past a long prompt, where attention's share of a token grows (results.json)
run "generate-long-$model" 15 "$HEARTH" bench generate "$MODELS/$model" --prompt-tokens $LONG_PROMPT --ctx $((LONG_PROMPT + NEW)) --new-tokens $NEW --json
# the prompt's attention over the cache in the tiled kernel's workgroups of 64 queries (each
# walking the keys), against the flash kernel's 64 × 64 tiles of scores
run "generate-long-$model-attention-tiled" 15 env HEARTH_ATTENTION=tiled "$HEARTH" bench generate "$MODELS/$model" --prompt-tokens $LONG_PROMPT --ctx $((LONG_PROMPT + NEW)) --new-tokens $NEW --json
# where Qwen2.5's step, prompt and decoded tokens go (its head of 151,936 words, its wider
# layers), each launch timed
case " $MODEL_LIST " in *" qwen2.5-0.5b "*)
    run kernels-qwen2.5-0.5b 30 "$HEARTH" bench train "$MODELS/qwen2.5-0.5b" --quant f32 $TRAIN_SHAPE --steps 1 --kernel-times --json
    run decode-kernels-qwen2.5-0.5b 15 "$HEARTH" bench generate "$MODELS/qwen2.5-0.5b" --prompt-tokens 128 --new-tokens $NEW --kernel-times --json ;;
esac
# Qwen3's step (heads of 128): where it goes, and the registers its flash kernels take (the
# keys' kernel: 168 VGPRs on AMD's compiler, one workgroup an SM where NVIDIA's gives as many)
# The same step with the keys' kernel in two launches, dv's then dk's (HEARTH_FLASH_KV=apart:
# each recomputes the scores, and holds one head's accumulators, not two: ACO gives 120 and
# 132 VGPRs against 168), timed and with its kernels' registers
case " $MODEL_LIST " in *" qwen3-0.6b "*)
    run kernels-qwen3-0.6b 30 "$HEARTH" bench train "$MODELS/qwen3-0.6b" --quant f32 $TRAIN_SHAPE --steps 1 --kernel-times $KERNEL_STATS --json
    run train-qwen3-0.6b-f32-kv-apart 30 env HEARTH_FLASH_KV=apart "$HEARTH" bench train "$MODELS/qwen3-0.6b" --quant f32 $TRAIN_SHAPE --steps $STEPS --json
    run kernels-qwen3-0.6b-kv-apart 30 env HEARTH_FLASH_KV=apart "$HEARTH" bench train "$MODELS/qwen3-0.6b" --quant f32 $TRAIN_SHAPE --steps 1 --kernel-times $KERNEL_STATS --json ;;
esac
# the first half of each example a prompt (no loss), whose tokens the head skips
for model in $MODEL_LIST; do
    run "train-$model-prompt-half" 30 "$HEARTH" bench train "$MODELS/$model" --quant f32 $TRAIN_SHAPE --steps $STEPS --prompt-share 0.5 --json
done
# hearth serve under 8 concurrent clients, by --max-batch (requests decoded together)
run serve-smollm2-135m 45 python3 bench/serve_load.py --json "$HEARTH" "$MODELS/smollm2-135m" $SERVE_LOAD
# The tiled kernels' tuned tile size and heuristics against their alternatives on this GPU,
# after the figures above: SmolLM2's f32 training step with every output in tiles of 64, or of 128, and with
# launches of few tiles splitting their reductions towards 256 workgroups (64 by default;
# LoRA's thin products alone too), in parts of 32 or 64 steps (256), and with the tiled kernels loading each step's values a
# step ahead (during the previous step's sums) and just before staging them, whatever the
# tuning chose (one of the two is the default run's order), LoRA's thin products split as the
# others (not as tuned apart), and with the f32 tiles of 128
# staging 16 reduction steps per iteration (8 by default)
for knob in tiles64:HEARTH_TILES=64 tiles128:HEARTH_TILES=128 split256:HEARTH_SPLIT_WORKGROUPS=256 split-steps32:HEARTH_SPLIT_MIN_STEPS=32 split-steps64:HEARTH_SPLIT_MIN_STEPS=64 thin-same:HEARTH_THIN_SPLIT=same ahead:HEARTH_TILE_PREFETCH=1 in-turn:HEARTH_TILE_PREFETCH=0 steps16:HEARTH_TILE_STEPS=16 columns64:HEARTH_TILE_COLUMNS=64 buffers2:HEARTH_TILE_BUFFERS=2; do
    run "train-smollm2-135m-f32-${knob%%:*}" 30 env "${knob#*:}" "$HEARTH" bench train "$MODELS/smollm2-135m" --quant f32 $TRAIN_SHAPE --steps $STEPS --json
done
# decoding with every reduction in workgroup memory (the browser's kernels), against the
# subgroup sums of the matrix-vector kernels, rmsnorm's and the rest (one and 8 sequences)
run generate-smollm2-135m-nosubgroups 20 env HEARTH_SUBGROUPS=0 "$HEARTH" bench generate "$MODELS/smollm2-135m" --prompt-tokens 128 --new-tokens $NEW --batch 8 --json
# greedy decoding reading the logits and picking on the host, against picking on the GPU
# (the default: one sequence a token ahead; 8 together reading their tokens, not their logits)
run generate-smollm2-135m-host-picks 20 env HEARTH_DECODE_AHEAD=0 "$HEARTH" bench generate "$MODELS/smollm2-135m" --prompt-tokens 128 --new-tokens $NEW --batch 8 --json
# sampled decoding (a server's default), one sequence and 8 together: its tokens drawn on the
# GPU as greedy ones are picked (a token ahead; the tokens read, not the logits)
run generate-smollm2-135m-sampled 20 "$HEARTH" bench generate "$MODELS/smollm2-135m" --prompt-tokens 128 --new-tokens $NEW --temperature 0.7 --top-p 0.9 --batch 8 --json
# the cooperative-matrix kernels (f32 and each quantized format) in tiles of 64 (2 × 2
# accumulators per subgroup) against 128 (4 × 4) at SmolLM2's shapes and at 4096³
for side in 64 128; do
    run "ops-coop$side" 20 env HEARTH_TILES=$side "$HEARTH" bench ops --json --filter "f16 coop" --reps 3 $COOP_SHAPES
done
run ops-lora-split256 20 env HEARTH_SPLIT_WORKGROUPS=256 "$HEARTH" bench ops --json --filter "f32" --reps 3 --shape 2048x16x576 --shape 2048x576x16 --shape 2048x16x1536 --shape 2048x1536x16
fi
# run_each BINARY NAME: BINARY's tests that its output ($WORK/tests-NAME.txt) shows no result
# for, each alone under a limit of its own, its exit and seconds into the log.
run_each() {
    local t=$1 name=$2 test r l start finished
    finished=$(sed -nE 's/^test (.*) \.\.\. (ok|FAILED|ignored)$/\1/p' "$WORK/tests-$name.txt")
    for test in $("$t" --list 2>/dev/null | sed -n 's/: test$//p'); do
        grep -qxF "$test" <<< "$finished" && continue
        l=$((30 * SLOW))
        [ "$(left)" -lt "$l" ] && l=$(left)
        [ "$l" -gt 0 ] || { echo "   $test: out of time" | tee -a "$LOG"; return; }
        start=$(date +%s)
        HEARTH_FIXTURES="$PWD/tests/fixtures" HEARTH_REQUIRE_GPU=1 timeout "$l" "$t" --exact "$test" --test-threads 1 --nocapture > "$WORK/test-$name-$test.txt" 2>&1
        r=$?
        echo "   $test alone: exit $r in $(($(date +%s) - start)) s" | tee -a "$LOG"
        [ $r -eq 0 ] || [ $r -eq 124 ] || grep -E -A6 "panicked" "$WORK/test-$name-$test.txt" | cut -c1-1500 | head -20 >> "$LOG"
        # where its limit stopped it, the last lines it printed (a test's progress)
        [ $r -ne 124 ] || tail -5 "$WORK/test-$name-$test.txt" | cut -c1-300 >> "$LOG"
    done
}

# Last, so that the benches get their time: the GPU kernels against the CPU references on
# this GPU (the test binaries bench/prepare.sh carried): failures and summaries into the log.
# (quant last: its checks take the longest, and the others must not wait on its limit)
for name in $TESTS; do
    t="$CARRY/tests/$name"
    [ -x "$t" ] || continue
    echo "== $(date -u +%T) tests $name" | tee -a "$LOG"
    # (quant's exhaustive checks took more than 45 s on the H200, matmul's 40)
    limit=$(( $([ "$name" = quant ] && echo 120 || echo 60) * SLOW ))
    [ "$(left)" -lt "$limit" ] && limit=$(left)
    [ "$limit" -gt 0 ] || { echo "   skipped: out of time" | tee -a "$LOG"; continue; }
    HEARTH_FIXTURES="$PWD/tests/fixtures" HEARTH_REQUIRE_GPU=1 timeout "$limit" "$t" --test-threads 1 > "$WORK/tests-$name.txt" 2>&1
    rc=$?
    echo "   exit $rc" | tee -a "$LOG"
    grep -E "^test .*FAILED|panicked|^test result" "$WORK/tests-$name.txt" | tee -a "$LOG"
    # a failure's messages, or where a limit stopped it, the tests that had finished
    [ $rc -eq 0 ] || grep -E -A6 "panicked" "$WORK/tests-$name.txt" | cut -c1-1500 | head -60 >> "$LOG"
    [ $rc -ne 124 ] || grep -E "^test " "$WORK/tests-$name.txt" | tail -20 >> "$LOG"
    # Where the limit stopped it, the tests it had not finished, one at a time (30 s each):
    # one that stalls is named, and the others still run.
    [ $rc -eq 124 ] && run_each "$t" "$name"
done
[ -z "$clocks_pid" ] || kill "$clocks_pid" 2>/dev/null
# the driver's texts of the kernels, one file (the device tool returns at most 8)
if [ -n "$(ls -A "$WORK/kernel-ir" 2>/dev/null)" ]; then
    tar -C "$WORK" -cJf "$OUT/kernel-ir.tar.xz" kernel-ir
    echo "== kernel-ir.tar.xz: $(ls "$WORK/kernel-ir" | wc -l) files, $(du -k "$OUT/kernel-ir.tar.xz" | cut -f1) KiB" | tee -a "$LOG"
fi
python3 bench/report.py "$WORK" "$OUT" | tee -a "$LOG"
echo "== $(date -u +%T) done" | tee -a "$LOG"
