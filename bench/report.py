"""Combines the JSON files bench/gpu.sh wrote into one (results.json) and a markdown table
of ratios, Hearth ÷ peer, and of each figure's share of what the chip allows (its practical
peaks, measured by bench/peer.py), for docs/PERF.md (report.md), both written to OUT_DIR
(default: the same folder).

    python3 bench/report.py RESULTS_DIR [OUT_DIR]

Files it reads (any may be missing: a bench that failed or ran out of time is reported as
such): ops.json, train-MODEL-BASE.json, generate-MODEL.json, peer-MODEL.json, env.json; and
clocks.csv (nvidia-smi's samples) with steps.tsv (each step's start and end), summarised
per step as results.json's "clocks".
"""
import csv
import json
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path


def load(path):
    """A bench's JSON: its stdout's last line (the benches print one object on one line), or
    the whole file where that is one object over many lines (the tuning file FOCUS=kernels
    keeps as tiles.json, as selftest wrote it)."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    for candidate in (text, text.splitlines()[-1] if text else ""):
        try:
            return json.loads(candidate)
        except ValueError:
            pass
    return None



def hopper_workgroups_per_sm(registers, invocations, workgroup_bytes):
    """How many workgroups of a kernel one SM of a Hopper GPU holds at once: its registers
    (per invocation, allocated in 8s, a warp's in 256s, of 65,536), its workgroup memory (of
    228 KB, 1 KB of it reserved per workgroup), its invocations (of 2,048) and at most 32
    workgroups. None where a figure is missing."""
    if not registers or not invocations or workgroup_bytes is None:
        return None
    warps = -(-invocations // 32)
    per_warp = -(-(-(-registers // 8) * 8 * 32) // 256) * 256
    by_registers = 65536 // (warps * per_warp)
    by_memory = (228 * 1024) // (workgroup_bytes + 1024)
    return min(by_registers, by_memory, 2048 // invocations, 32)

def loss_gap(run, default):
    """The largest difference between two train runs' losses, step by step."""
    return max((abs(a - b) for a, b in zip(run["losses"], default["losses"])), default=0.0)


def same_products(first, second):
    """(row of first, row of second) for each product (op and shape) both runs timed, in
    first's order."""
    key = lambda r: (r["op"], r["m"], r["n"], r["k"])
    by_key = {key(r): r for r in second}
    return [(r, by_key[key(r)]) for r in first if key(r) in by_key]


def ratio(a, b):
    return f"{a / b:.2f}" if a and b else "—"


def num(x, digits=1):
    return f"{x:,.{digits}f}" if isinstance(x, (int, float)) else "—"


def train_limit(h, gflops):
    """The share of a training step that its matmul FLOPs take at `gflops` (a practical peak):
    the step's speed as a fraction of what those FLOPs alone allow."""
    if not (h and gflops and h.get("matmul_gflop_per_step") and h.get("ms_per_step")):
        return None
    return h["matmul_gflop_per_step"] / gflops / (h["ms_per_step"] / 1e3)


def decode_limit(g, gb_per_s):
    """Decoding's speed as a fraction of the bandwidth's: each token reads every weight and
    the KV cache of its context (the mean over the decoded tokens) once."""
    if not (g and gb_per_s and g.get("weight_bytes")):
        return None
    context = g["prompt_tokens"] + g["new_tokens"] / 2
    bytes_per_token = g["weight_bytes"] + g.get("kv_bytes_per_context_token", 0) * context
    return g["decode_tokens_per_s"] * bytes_per_token / (gb_per_s * 1e9)


def prefill_limit(g, gflops, gb_per_s):
    """The prompt's speed as a fraction of the larger of its matmul FLOPs at `gflops` and its
    weights read once at the bandwidth."""
    if not (g and gflops and gb_per_s and g.get("prefill_matmul_gflop") and g.get("weight_bytes")):
        return None
    least_s = max(g["prefill_matmul_gflop"] / gflops, g["weight_bytes"] / (gb_per_s * 1e9))
    return least_s * g["prefill_tokens_per_s"] / g["prompt_tokens"]


def step_clocks(d):
    """Each step's GPU clocks from nvidia-smi's samples during it: the medians of the SM and
    memory clocks (MHz), power (W) and load (%), the slowest SM clock, the P-states and the
    reasons the driver gave for holding the clocks down; None without the files."""
    try:
        rows = list(csv.reader((d / "clocks.csv").read_text().splitlines()))
        steps = [line.split("\t") for line in (d / "steps.tsv").read_text().splitlines() if line]
    except OSError:
        return None
    fields = [f.strip() for f in rows[0]]
    samples = []
    for r in rows[1:]:
        v = dict(zip(fields, (x.strip() for x in r)))
        try:
            # (nvidia-smi writes the machine's local time, as mktime reads it)
            at = datetime.strptime(v["timestamp"], "%Y/%m/%d %H:%M:%S.%f")
            v["at"] = time.mktime(at.timetuple()) + at.microsecond / 1e6
            samples.append(v)
        except (KeyError, ValueError):
            continue

    def median(vs, key):
        xs = []
        for v in vs:
            try:
                xs.append(float(v[key]))
            except (KeyError, ValueError):
                pass
        return (statistics.median(xs), min(xs)) if xs else (None, None)

    out = {}
    for name, start, end in steps:
        during = [v for v in samples if float(start) <= v["at"] <= float(end)]
        if not during:
            continue
        sm, sm_min = median(during, "clocks.sm")
        out[name] = {"samples": len(during), "sm_mhz": sm, "sm_mhz_min": sm_min, "mem_mhz": median(during, "clocks.mem")[0],
                     "max_sm_mhz": median(during, "clocks.max.sm")[0], "power_w": median(during, "power.draw")[0],
                     "util_pct": median(during, "utilization.gpu")[0], "pstates": sorted({v.get("pstate", "") for v in during}),
                     "held_down_by": sorted({v["clocks_event_reasons.active"] for v in during if "clocks_event_reasons.active" in v})}
    return out


def selftest_lines(path):
    """What `hearth selftest` (gpu.sh's first command: its kernels against the CPU's, a training
    step's among them) said on this GPU: its failed checks by name, else how many passed."""
    try:
        checks = [line for line in path.read_text().splitlines() if "largest difference" in line]
    except OSError:
        return ["", "Kernel checks (`hearth selftest`): no output kept."]
    failed = [line.split(" largest difference")[0].strip() for line in checks if line.rstrip().endswith("FAILED")]
    if failed:
        return ["", f"Kernel checks (`hearth selftest`): {len(failed)} of {len(checks)} FAILED (log.txt has each difference): " + "; ".join(failed)]
    training = sum("training" in line for line in checks)
    return ["", f"Kernel checks (`hearth selftest`): all {len(checks)} passed" + (f", {training} of them a training step's" if training else "") + "."]


def main():
    d = Path(sys.argv[1])
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else d
    results = {p.stem: load(p) for p in sorted(d.glob("*.json")) if p.name != "results.json"}
    clocks = step_clocks(d)
    if clocks is not None:
        results["clocks"] = clocks
    (out / "results.json").write_text(json.dumps(results, indent=1))
    env = results.get("env") or {}
    rows = []  # (figure, hearth, peer, ratio, target, Hearth's share of the limit)

    def add(figure, hearth, peer, r, target, limit=None):
        rows.append((figure, hearth, peer, r, target, num(limit, 2) if limit is not None else ""))

    ops = results.get("ops")
    peers = {k.removeprefix("peer-"): v for k, v in results.items() if k.startswith("peer-") and v}
    peak = next(iter(peers.values()), {}).get("matmul", []) if peers else []
    torch_rate = {m["dtype"]: m["gflops"] for m in peak}
    f32_peak, bf16_peak = torch_rate.get("float32"), torch_rate.get("bfloat16")
    gb_per_s = next((v.get("bandwidth", {}).get("gb_per_s") for v in peers.values() if v.get("bandwidth")), None)
    if ops:
        square = [r for r in ops["rows"] if (r["m"], r["n"], r["k"]) == (4096, 4096, 4096)]
        for r in square:
            peer_dtype = "float32" if r["op"].startswith("f32") else "bfloat16"
            target = {"f32 forward": "≥ 0.5", "f16 coop forward": "≥ 0.3"}.get(r["op"], "")
            add(f"matmul 4096³ {r['op']} (GFLOP/s) vs torch {peer_dtype}", num(r["rate"]), num(torch_rate.get(peer_dtype)),
                ratio(r["rate"], torch_rate.get(peer_dtype)), target, r["rate"] / torch_rate[peer_dtype] if torch_rate.get(peer_dtype) else None)
        # this GPU's own peaks through Hearth's pipeline (bench ops' first rows): a matmul
        # figure low by the same factor as the FMA rate is the GPU's (its clocks, the
        # driver), not the kernel's
        own = {r["op"]: r for r in ops["rows"] if r["op"].startswith("peak ")}
        fma, add_bw = own.get("peak fma"), own.get("peak a + b")
        if fma:
            add("this GPU's f32 rate through Hearth's pipeline, no memory traffic (`peak fma`, GFLOP/s) vs torch's f32 matmul 4096³",
                num(fma["rate"]), num(f32_peak), ratio(fma["rate"], f32_peak), "")
            for r in square:
                if r["op"] in ("f32 forward", "f16 coop forward"):
                    add(f"matmul 4096³ {r['op']} vs that f32 rate (GFLOP/s)", num(r["rate"]), num(fma["rate"]), ratio(r["rate"], fma["rate"]), "")
        # the same on cooperative matrices: how far the f16 coop matmuls are from what this
        # GPU runs through wgpu's cooperative matrices at all, and that from torch's bf16
        coop_peak = own.get("peak coop")
        if coop_peak:
            add("this GPU's f16 rate on cooperative matrices through Hearth's pipeline, no memory traffic (`peak coop`, GFLOP/s) vs torch's bf16 matmul 4096³",
                num(coop_peak["rate"]), num(bf16_peak), ratio(coop_peak["rate"], bf16_peak), "")
            for r in square:
                if r["op"] in ("f16 coop forward", "f16 f16 coop forward", "q4_0 f16 coop forward"):
                    add(f"matmul 4096³ {r['op']} vs that cooperative-matrix rate (GFLOP/s)", num(r["rate"]), num(coop_peak["rate"]), ratio(r["rate"], coop_peak["rate"]), "")
        # matmul_coop.wgsl's stages loaded a stage ahead, in tiles of 64, against in turn
        ahead_rows = [(results.get(f"ops-coop64-ahead{a}") or {}).get("rows", []) for a in (1, 0)]
        for a, t in same_products(*ahead_rows):
            if (a["op"], a["m"], a["n"], a["k"]) != ("f16 coop forward", 4096, 4096, 4096):
                continue
            add("matmul 4096³ f16 coop forward in tiles of 64: each stage's values loaded a stage ahead (HEARTH_COOP_PREFETCH=1) vs in turn (GFLOP/s)",
                num(a["rate"]), num(t["rate"]), ratio(a["rate"], t["rate"]), "")
        if add_bw:
            add("this GPU's bandwidth through Hearth's pipeline (`peak a + b`: residual_forward, 12 bytes a value, GB/s) vs torch's device copy",
                num(add_bw["rate"]), num(gb_per_s), ratio(add_bw["rate"], gb_per_s), "")
        # what a launch costs with next to no work: a step of some 1,500 launches pays it each
        # time (in a chain, a barrier between each two, as most of a step's launches are)
        chained, apart = own.get("peak launches, chained"), own.get("peak launches, apart")
        if chained and apart:
            add("a launch's own cost (`peak launches`: one workgroup of one round, µs), each writing the last one's output vs 8 outputs in turn",
                num(chained["ms"] * 1e3, 1), num(apart["ms"] * 1e3, 1), ratio(chained["ms"], apart["ms"]), "")
        # each quantized format's fastest kernel (f32 tiles, f16 tiles, cooperative matrices)
        # against the f32 matmul of the same shape and kind: the "no slower"
        f32_rate = {r["op"].split()[-1]: r["rate"] for r in square if r["op"] in ("f32 forward", "f32 backward_input")}
        best = {}
        for r in square:
            fmt, kind = r["op"].split()[0], r["op"].split()[-1]
            if fmt in ("nf4", "q4_0", "q4_1", "q8_0") and kind in f32_rate and r["rate"] > best.get((fmt, kind), {"rate": 0})["rate"]:
                best[(fmt, kind)] = r
        for (fmt, kind), r in sorted(best.items()):
            add(f"matmul 4096³ {fmt} {kind}, fastest ({r['op']}) vs Hearth's f32 {kind} (GFLOP/s)", num(r["rate"]), num(f32_rate[kind]),
                ratio(r["rate"], f32_rate[kind]), "≥ 1.0")
    # every model with a result of its own, so that Hearth's figures show where the peer failed
    models = sorted({k.removeprefix("generate-") for k, v in results.items() if v and k.startswith("generate-") and not k.startswith("generate-long-") and not k.endswith(("-nosubgroups", "-host-picks", "-sampled"))}
                    | {k.removeprefix("train-").rsplit("-", 1)[0] for k, v in results.items() if v and k.startswith("train-") and k.endswith(("-f32", "-q4_1", "-nf4"))}
                    | set(peers))
    for name in models:
        peer = peers.get(name, {})
        fp32 = next((t for t in peer.get("train", []) if t["precision"] == "fp32"), {})
        bf16 = next((t for t in peer.get("train", []) if t["precision"] == "bf16"), {})
        for base in ("f32", "q4_1", "nf4"):
            h = results.get(f"train-{name}-{base}")
            if not h:
                continue
            t = h["tokens_per_s"]
            # (PEFT's runs keep their activations; gpu.sh asks Hearth's to, where its auto would not)
            label = f"{base} (gradient checkpointing)" if h.get("settings", {}).get("checkpointing") else base
            add(f"{name} LoRA train tokens/s, base {label}, vs PEFT fp32", num(t), num(fp32.get("tokens_per_s")),
                ratio(t, fp32.get("tokens_per_s")), "≥ 1.0" if base == "f32" else "", train_limit(h, f32_peak))
            add(f"{name} LoRA train tokens/s, base {label}, vs PEFT bf16", num(t), num(bf16.get("tokens_per_s")),
                ratio(t, bf16.get("tokens_per_s")), "≥ 1.0 (stretch)" if base == "f32" else "", train_limit(h, bf16_peak))
            add(f"{name} base {base}: GPU busy / step wall time", num(h.get("gpu_busy"), 2), "", "", "≥ 0.8")
            add(f"{name} base {base}: launches / step; host ms / step", f"{num(h['dispatches_per_step'], 0)}; {num(h['host_ms_per_step'])}", "", "", "")
            add(f"{name} base {base}: bind groups; buffers created / step after the warm-up",
                f"{num(h.get('bind_groups_created_per_step'), 0)}; {num(h.get('buffers_created_per_step'), 0)}", "", "", "0; 0")
            add(f"{name} base {base}: matmul_efficiency", num(h["matmul_efficiency"], 2), "", "", "")
            add(f"{name} base {base}: peak GPU MiB (PEFT fp32)", num(h["peak_gpu_memory_mib"], 0), num(fp32.get("peak_gpu_memory_mib"), 0),
                ratio(h["peak_gpu_memory_mib"], fp32.get("peak_gpu_memory_mib")), "")
        default = results.get(f"train-{name}-f32")
        for tag, what in (("tiled", "the tiled attention kernels (HEARTH_ATTENTION=tiled)"), ("matmul", "attention as batched matmuls (HEARTH_ATTENTION=matmul)")):
            other = results.get(f"train-{name}-f32-attention-{tag}")
            if other and default:
                add(f"{name} f32 train tokens/s: {what} vs the flash kernels (the default)",
                    num(other["tokens_per_s"]), num(default["tokens_per_s"]), ratio(other["tokens_per_s"], default["tokens_per_s"]), "")
        apart = results.get(f"train-{name}-f32-kv-apart")
        if apart and default:
            add(f"{name} f32 train tokens/s: the flash kernels' dk and dv in launches of their own (HEARTH_FLASH_KV=apart) vs in one (the default)",
                num(apart["tokens_per_s"]), num(default["tokens_per_s"]), ratio(apart["tokens_per_s"], default["tokens_per_s"]), "")
        prompt = results.get(f"train-{name}-prompt-half")
        if prompt and default:
            add(f"{name} f32 train tokens/s: the first half of each example a prompt (no loss; the head skips its tokens) vs every token with loss",
                num(prompt["tokens_per_s"]), num(default["tokens_per_s"]), ratio(prompt["tokens_per_s"], default["tokens_per_s"]), "")
        for tag, what in (("tiles64", "every output in tiles of 64 (HEARTH_TILES=64)"), ("tiles128", "every output in tiles of 128 (HEARTH_TILES=128)"),
                          ("split256", "few tiles' reductions split towards 256 workgroups (HEARTH_SPLIT_WORKGROUPS=256)"),
                          ("split-steps32", "split reductions in parts of 32 steps or more (HEARTH_SPLIT_MIN_STEPS=32; default 256)"),
                          ("split-steps64", "split reductions in parts of 64 steps or more (HEARTH_SPLIT_MIN_STEPS=64)"),
                          ("thin-same", "LoRA's thin products split as the other launches, not as tuned apart (HEARTH_THIN_SPLIT=same)"),
                          ("steps16", "f32 tiles of 128 staging 16 reduction steps per iteration (HEARTH_TILE_STEPS=16; default 8)"),
                          ("columns64", "f32 tiles of 128 rows by 64 columns (HEARTH_TILE_COLUMNS=64; default 128)"),
                          ("buffers2", "f32 tiles of 128 kept twice in workgroup memory, one barrier per iteration (HEARTH_TILE_BUFFERS=2; default once)")):
            knob = results.get(f"train-{name}-f32-{tag}")
            if knob and default:
                add(f"{name} f32 train tokens/s: {what} vs the tuned tile size and heuristics", num(knob["tokens_per_s"]), num(default["tokens_per_s"]),
                    ratio(knob["tokens_per_s"], default["tokens_per_s"]), "")
        ahead, in_turn = results.get(f"train-{name}-f32-ahead"), results.get(f"train-{name}-f32-in-turn")
        if ahead and in_turn:
            add(f"{name} f32 train tokens/s: the tiled matmuls' values loaded a step ahead (HEARTH_TILE_PREFETCH=1) vs just before they are staged (=0)",
                num(ahead["tokens_per_s"]), num(in_turn["tokens_per_s"]), ratio(ahead["tokens_per_s"], in_turn["tokens_per_s"]), "")
        for tag, what in (("all", "every one of wgpu's shader safeguards, the loop counters too (HEARTH_SHADER_CHECKS=1)"),
                          ("no-bounds", "without wgpu's bounds checks (HEARTH_SHADER_CHECKS=zeroing)"),
                          ("no-zeroing", "without zeroed workgroup memory (HEARTH_SHADER_CHECKS=bounds)"),
                          ("none", "none of wgpu's shader safeguards (HEARTH_SHADER_CHECKS=0)")):
            checks = results.get(f"train-{name}-f32-checks-{tag}")
            if checks and default:
                add(f"{name} f32 train tokens/s: {what} vs the default (bounds checks and zeroing, no loop counters)",
                    num(checks["tokens_per_s"]), num(default["tokens_per_s"]), ratio(checks["tokens_per_s"], default["tokens_per_s"]), "")
        # Every f32 variant trains the same model on the same batches from the same seed: its
        # losses should be the default's but for the order of float sums (f16 matmuls: f16's
        # rounding), so a variant whose kernels go wrong on this GPU shows here.
        variants = sorted(k for k, v in results.items()
                          if v and k.startswith(f"train-{name}-f32-") and not k.endswith("-f16-matmuls") and v.get("losses"))
        if default and default.get("losses") and variants:
            gaps = {k: loss_gap(results[k], default) for k in variants}
            worst = max(gaps, key=gaps.get)
            add(f"{name} f32 train: largest loss difference from the default run over its steps, of {len(variants)} f32 variants ({worst.removeprefix(f'train-{name}-f32-')})",
                f"{gaps[worst]:.1e}", "", "", "≤ 1e-3")
        f16 = results.get(f"train-{name}-f32-f16-matmuls")
        if default and default.get("losses") and f16 and f16.get("losses"):
            add(f"{name} f32 train: largest loss difference of the f16 matmuls (HEARTH_F16_MATMUL=1) from the default run", f"{loss_gap(f16, default):.1e}", "", "", "")
        for base in ("f32", "q4_1"):
            f16 = results.get(f"train-{name}-{base}-f16-matmuls")
            plain = results.get(f"train-{name}-{base}")
            if not (f16 and plain):
                continue
            add(f"{name} base {base} train tokens/s: f16 matmuls (HEARTH_F16_MATMUL=1: forwards and input gradients on cooperative matrices or in f16 tiles) vs f32",
                num(f16["tokens_per_s"]), num(plain["tokens_per_s"]), ratio(f16["tokens_per_s"], plain["tokens_per_s"]), "", train_limit(f16, bf16_peak))
            add(f"{name} the same vs PEFT bf16", num(f16["tokens_per_s"]), num(bf16.get("tokens_per_s")),
                ratio(f16["tokens_per_s"], bf16.get("tokens_per_s")), "≥ 1.0 (stretch)" if base == "f32" else "")
        g = results.get(f"generate-{name}")
        pg = peer.get("generate", {})
        if g:
            add(f"{name} decode tokens/s vs transformers fp32", num(g["decode_tokens_per_s"]), num(pg.get("decode_tokens_per_s")),
                ratio(g["decode_tokens_per_s"], pg.get("decode_tokens_per_s")), "≥ 1.5", decode_limit(g, gb_per_s))
            add(f"{name} prefill tokens/s vs transformers fp32", num(g["prefill_tokens_per_s"]), num(pg.get("prefill_tokens_per_s")),
                ratio(g["prefill_tokens_per_s"], pg.get("prefill_tokens_per_s")), "≥ 1.0", prefill_limit(g, f32_peak, gb_per_s))
            together = g.get("batch")
            if together:
                add(f"{name} {together['sequences']} sequences decoded together (serve's batch): tokens/s in all; launches and host ms per step, vs one sequence's tokens/s",
                    f"{num(together['decode_tokens_per_s'])}; {num(together['dispatches_per_step'], 0)}, {num(together['host_ms_per_step'], 2)}",
                    num(g["decode_tokens_per_s"]), ratio(together["decode_tokens_per_s"], g["decode_tokens_per_s"]), "")
            # one sequence's decode tokens/s; 8 together's
            def pair(gen):
                return f"{num(gen['decode_tokens_per_s'])}; {num((gen.get('batch') or {}).get('decode_tokens_per_s'))}"
            for suffix, against in (("nosubgroups", "subgroup sums (the default) vs workgroup memory only (HEARTH_SUBGROUPS=0, the browser's kernels)"),
                                    ("host-picks", "greedy tokens picked on the GPU (the default; one sequence run a token ahead) vs the logits read and picked on the host (HEARTH_DECODE_AHEAD=0)")):
                other = results.get(f"generate-{name}-{suffix}")
                if other:
                    add(f"{name} decode tokens/s, one sequence; 8 together: {against}", pair(g), pair(other),
                        ratio(g["decode_tokens_per_s"], other["decode_tokens_per_s"]), "")
            sampled = results.get(f"generate-{name}-sampled")
            if sampled:
                add(f"{name} decode tokens/s, one sequence; 8 together: sampled (temperature 0.7, top_p 0.9, drawn on the GPU; the host's sampling ms a token; a step, where it samples) vs greedy",
                    f"{pair(sampled)} ({num(sampled.get('host_sampling_ms_per_token'), 3)}; {num((sampled.get('batch') or {}).get('host_sampling_ms_per_step'), 3)} ms)",
                    pair(g), ratio(sampled["decode_tokens_per_s"], g["decode_tokens_per_s"]), "")
            if g.get("prefill_dispatches") is not None:
                gpu_ms = g.get("prefill_gpu_ms")
                add(f"{name} prefill: launches; host ms (GPU ms)", f"{g['prefill_dispatches']}; {num(g['prefill_host_ms'])} ({num(gpu_ms)})", "", "", "")
        long, long_tiled = results.get(f"generate-long-{name}"), results.get(f"generate-long-{name}-attention-tiled")
        long_rows = results.get(f"generate-long-{name}-attention-rows")  # (calls before the flash kernels)
        if long:
            add(f"{name} after a long prompt ({long['prompt_tokens']} tokens): prefill; decode tokens/s",
                f"{num(long['prefill_tokens_per_s'])}; {num(long['decode_tokens_per_s'])}", "", "", "")
        if long and long_tiled:
            add(f"{name} long prompt's prefill tokens/s: attention over the cache in the flash kernel's tiles of scores (GPUs' default) vs workgroups of 64 queries (HEARTH_ATTENTION=tiled)",
                num(long["prefill_tokens_per_s"]), num(long_tiled["prefill_tokens_per_s"]), ratio(long["prefill_tokens_per_s"], long_tiled["prefill_tokens_per_s"]), "")
        if long and long_rows:
            add(f"{name} long prompt's prefill tokens/s: attention over the cache in tiles (the GPUs' default then) vs an invocation per query (HEARTH_ATTENTION=rows)",
                num(long["prefill_tokens_per_s"]), num(long_rows["prefill_tokens_per_s"]), ratio(long["prefill_tokens_per_s"], long_rows["prefill_tokens_per_s"]), "")
    adapter = (ops or {}).get("adapter") or next((v["adapter"] for v in results.values() if v and "adapter" in v), {})
    lines = [
        f"{env.get('date', '')}: {env.get('gpu') or adapter.get('name', '')}, driver {adapter.get('driver') or env.get('driver', '')}, "
        f"{adapter.get('backend', '')}; torch {next(iter(peers.values()), {}).get('torch', '—')}",
        "",
        "| figure | Hearth | peer | ratio | target | of the limit |",
        "| --- | ---: | ---: | ---: | --- | ---: |",
    ]
    lines += [f"| {f} | {h} | {p} | {r} | {t} | {lim} |" for f, h, p, r, t, lim in rows]
    lines += selftest_lines(d / "selftest.txt")
    lines += ["", "Of the limit: Hearth's figure as a fraction of what the chip's practical peaks allow "
              f"(torch's matmuls at 4096³: f32 {num(f32_peak, 0)}, bf16 {num(bf16_peak, 0)} GFLOP/s; a device-to-device copy: {num(gb_per_s)} GB/s). "
              "Training: the step's matmul FLOPs at the f32 peak (the bf16 peak on the bf16 and f16 rows); decoding: every weight "
              "and the KV cache of the context read once per token; prefill: the larger of its matmul FLOPs at the f32 peak and its "
              "weights read once; the 4096³ matmuls: torch's rate."]
    if ops:
        # the forwards at the model's shapes: f32 in both tile sizes, f16, each quantized format
        model_rows = [r for r in ops["rows"] if (r["m"], r["n"], r["k"]) != (4096, 4096, 4096) and "forward" in r["op"] and "row" not in r["op"]]
        if model_rows:
            lines += ["", "The forwards at the model's shapes (f32 in both tile sizes, f16, each quantized format):", "",
                      "| op | M × N × K | kernel | ms | GFLOP/s |", "| --- | --- | --- | ---: | ---: |"]
            lines += [f"| {r['op']} | {r['m']} × {r['n']} × {r['k']} | {' + '.join(r['kernels'])} | {r['ms']:.3f} | {r['rate']:,.0f} |" for r in model_rows]
        # and the input gradients (training's other half of the frozen base's FLOPs)
        dx_rows = [r for r in ops["rows"] if (r["m"], r["n"], r["k"]) != (4096, 4096, 4096) and "backward_input" in r["op"]]
        if dx_rows:
            lines += ["", "The input gradients at the model's shapes (f32, f16 tiles with their rows scaled, each quantized format):", "",
                      "| op | M × N × K | kernel | ms | GFLOP/s |", "| --- | --- | --- | ---: | ---: |"]
            lines += [f"| {r['op']} | {r['m']} × {r['n']} × {r['k']} | {' + '.join(r['kernels'])} | {r['ms']:.3f} | {r['rate']:,.0f} |" for r in dx_rows]
    tiles = results.get("tiles")
    if tiles:
        wide = f"from {tiles['wide_outputs']:,} outputs" if tiles.get("wide_outputs") else "never"
        loads = lambda t: "ahead" if t.get("prefetch", True) else "in turn"
        lines += ["", f"The tiles tuned for this GPU (`hearth bench tiles`): 128 × 128 tiles {wide}, 64 × 64 below "
                  f"(the fixed guess: from 1,048,576 outputs), few tiles' reductions split towards {tiles.get('split_workgroups', 64)} workgroups "
                  f"in parts of {tiles.get('split_min_steps', 256)} steps or more "
                  f"(the fixed guess: 64 and 256; where a split splits a shape as the guess does, the guess's times stand for it), the values loaded {loads(tiles)} "
                  "(the fixed guess: a step ahead, during the previous step's sums)"
                  + (f"; the GPU runs {tiles['workgroups_at_once']:,} workgroups of the f32 tiles of 128 at once (measured: a split candidate)" if tiles.get("workgroups_at_once") else "")
                  + ":", "",
                  "| format | M × N × K | outputs | split towards | parts of | loads | ms, 64 × 64 | ms, 128 × 128 |", "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: |"]
        lines += [f"| {t['format']} | {t['m']} × {t['n']} × {t['k']} | {t['m'] * t['n']:,} | {t.get('split_workgroups', 64)} | {t.get('split_min_steps', 256)} | {loads(t)} | {t['ms_64']:.3f} | {t['ms_128']:.3f} |"
                  for t in tiles["timed"]]
        if tiles.get("steps_timed"):
            lines += ["", f"Then, at the shapes in tiles of 128, the f32 forward staging 16 reduction steps per iteration against 8 "
                      f"(kept: {tiles.get('steps', 8)}):", "", "| M × N × K | ms, 8 steps | ms, 16 steps | 8 ÷ 16 |", "| --- | ---: | ---: | ---: |"]
            lines += [f"| {t['m']} × {t['n']} × {t['k']} | {t['ms_8']:.3f} | {t['ms_16']:.3f} | {ratio(t['ms_8'], t['ms_16'])} |" for t in tiles["steps_timed"]]
        if tiles.get("columns_timed"):
            lines += ["", f"Then, at the steps kept, the f32 tiles of 128 rows 64 columns wide (8 × 4 outputs an invocation) against 128 (8 × 8) "
                      f"(kept: {tiles.get('columns', 128)}):", "", "| M × N × K | ms, 128 columns | ms, 64 columns | 128 ÷ 64 |", "| --- | ---: | ---: | ---: |"]
            lines += [f"| {t['m']} × {t['n']} × {t['k']} | {t['ms_128']:.3f} | {t['ms_64']:.3f} | {ratio(t['ms_128'], t['ms_64'])} |" for t in tiles["columns_timed"]]
        if tiles.get("buffers_timed"):
            lines += ["", f"Then, at the columns kept, the f32 tiles of 128 kept twice in workgroup memory (one barrier per iteration) against once "
                      f"(kept: {tiles.get('buffers', 1)}):", "", "| M × N × K | ms, once | ms, twice | once ÷ twice |", "| --- | ---: | ---: | ---: |"]
            lines += [f"| {t['m']} × {t['n']} × {t['k']} | {t['ms_1']:.3f} | {t['ms_2']:.3f} | {ratio(t['ms_1'], t['ms_2'])} |" for t in tiles["buffers_timed"]]
        long = tiles.get("long_timed")
        if long:
            lines += ["", f"The lm_head's input gradient ({long['m']} × {long['k']} over {long['n']:,} steps, f32, at everything kept) in tiles of 64: "
                      f"{long['ms_64']:.3f} ms; of 128: {long['ms_128']:.3f} ms ({ratio(long['ms_64'], long['ms_128'])}; kept: reductions of 16,384 steps or more "
                      + ("in tiles of 128 whatever their outputs)." if tiles.get("long_wide") else "as their outputs say).")]
        if tiles.get("thin_timed"):
            thin = tiles.get("thin_split")
            kept = f"towards {thin['workgroups']:,} workgroups in parts of {thin['min_steps']} steps or more" if thin else "as the others split"
            lines += ["", f"Last, LoRA's thin products (x·Aᵀ, r 16) in tiles of 64 × 32, split as the others and as the thin tiles' own candidates "
                      f"(kept: {kept}; `HEARTH_THIN_SPLIT=W,S` forces one):", "",
                      "| batch × M × N × K | split towards | parts of at least | ms |", "| --- | ---: | ---: | ---: |"]
            lines += [f"| {t['batch']} × {t['m']} × {t['n']} × {t['k']} | {t['split_workgroups']:,} | {t['split_min_steps']} | {t['ms']:.3f} |" for t in tiles["thin_timed"]]
    coop_tiles = results.get("tiles-coop")
    coop_rows = [t for t in (coop_tiles or {}).get("timed", []) if t["format"] == "f16 coop"]
    if coop_rows:
        wide = f"from {coop_tiles['coop_wide_outputs']:,} outputs" if coop_tiles.get("coop_wide_outputs") else "never"
        lines += ["", f"The cooperative-matrix kernels' tiles tuned for this GPU (`HEARTH_F16_MATMUL=1 hearth bench tiles`): 128 × 128 tiles {wide}, "
                  "64 × 64 below (a context without this tuning follows the tiled kernels' threshold):", "",
                  "| M × N × K | outputs | ms, 64 × 64 | ms, 128 × 128 |", "| --- | ---: | ---: | ---: |"]
        lines += [f"| {t['m']} × {t['n']} × {t['k']} | {t['m'] * t['n']:,} | {t['ms_64']:.3f} | {t['ms_128']:.3f} |" for t in coop_rows]
    for key, title in (("ops-sweep", "f32 forward matmul by shape (a fixed cost per launch shows as equal times)"),
                       ("ops-probes", "Where the f32 forward's time goes (tiles of 128 × 128, loaded in turn, 8 steps, the forward's row too): its probes load from memory in the first iteration only "
                                      "(`loads once`), or stage the tiles in it only (`sums only`: the inner loop alone; `row-major lanes`: each 32 invocations on 16 × 2 blocks of outputs in order, "
                                      "as before their lanes paired on the words they read), each with the forward's arithmetic"),
                       ("ops-coop-probes", "Where the cooperative-matrix forward's time goes (HEARTH_TILES=128, the forward's rows too): its probe stages the tiles in the first iteration only, "
                                           "every later one summing them again without barriers (`sums only`: the inner loop alone: cooperative loads from workgroup memory and products); "
                                           "`peak coop` in the first table is the products alone"),
                       ("ops-checks-all", "f32 forward matmul with every one of wgpu's shader safeguards, the loop counters too (HEARTH_SHADER_CHECKS=1)"),
                       ("ops-checks-none", "f32 forward matmul with none of wgpu's shader safeguards (HEARTH_SHADER_CHECKS=0)"),
                       ("ops-register", "f32 forward matmul on the register-blocked kernels of CPU emulators (matmul.wgsl, no workgroup memory; HEARTH_KERNELS=llvmpipe)"),
                       ("ops-steps16", "f32 matmuls with tiles of 128 staging 16 reduction steps per iteration (HEARTH_TILE_STEPS=16; the ops table above: 8)"),
                       ("ops-columns64", "f32 matmuls in tiles of 128 rows by 64 columns, 8 × 4 outputs an invocation (HEARTH_TILE_COLUMNS=64 HEARTH_TILES=128; the ops table above: 128 × 128)"),
                       ("ops-buffers2", "f32 matmuls in tiles of 128 kept twice in workgroup memory, one barrier per iteration (HEARTH_TILE_BUFFERS=2 HEARTH_TILES=128; the ops table above: once)"),
                       ("ops-lora", "LoRA's thin f32 matmuls (4 × 512 tokens, r 16)"),
                       ("ops-lora-split256", "LoRA's thin f32 matmuls, few tiles' reductions split towards 256 workgroups (HEARTH_SPLIT_WORKGROUPS=256)")):
        sweep = results.get(key)
        if sweep:
            lines += ["", f"{title}:", "", "| op | M × N × K | kernel | ms | GFLOP/s |", "| --- | --- | --- | ---: | ---: |"]
            lines += [f"| {r['op']} | {r['m']} × {r['n']} × {r['k']} | {' + '.join(r['kernels'])} | {r['ms']:.3f} | {r['rate']:,.0f} |" for r in sweep["rows"]]
    ahead = {a: results.get(f"ops-coop64-ahead{a}") for a in (0, 1)}
    if all(c and c["rows"] for c in ahead.values()):
        lines += ["", "The cooperative-matrix forwards in tiles of 64 (HEARTH_TILES=64), each stage's values loaded during the last stage's products "
                  "(HEARTH_COOP_PREFETCH=1: `a stage ahead`, matmul_coop.wgsl's f32 operands only) against loaded just before they are staged (the default); "
                  "the f16 weights' and quantized forwards stage in turn in both runs (a control):", "",
                  "| op | M × N × K | kernel, a stage ahead | ms, in turn | ms, a stage ahead | ahead ÷ in turn (rate) |",
                  "| --- | --- | --- | ---: | ---: | ---: |"]
        for r, t in same_products(ahead[1]["rows"], ahead[0]["rows"]):
            lines.append(f"| {r['op']} | {r['m']} × {r['n']} × {r['k']} | {' + '.join(r['kernels'])} | {t['ms']:.3f} | {r['ms']:.3f} | {ratio(r['rate'], t['rate'])} |")
    coop = {side: results.get(f"ops-coop{side}") for side in (64, 128)}
    # (an adapter without cooperative matrices gives no rows: no table then)
    if all(c and c["rows"] for c in coop.values()):
        lines += ["", "The cooperative-matrix kernels (HEARTH_F16_MATMUL=1's forwards and input gradients) in tiles of 64 "
                  "(2 × 2 accumulators per subgroup) and of 128 (4 × 4), HEARTH_TILES=64 and =128:", "",
                  "| op | M × N × K | ms, 64 × 64 | ms, 128 × 128 | GFLOP/s, 64 | GFLOP/s, 128 | 128 ÷ 64 |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
        for r, w in same_products(coop[64]["rows"], coop[128]["rows"]):
            lines.append(f"| {r['op']} | {r['m']} × {r['n']} × {r['k']} | {r['ms']:.3f} | {w['ms']:.3f} | {r['rate']:,.0f} | {w['rate']:,.0f} | {ratio(w['rate'], r['rate'])} |")
    # (runs before the in-step timestamps timed each launch alone)
    def kernel_table(what, kernels, timing, total=None, rows=20):
        ks = sorted(kernels, key=lambda k: -k.get("ms", 0))
        total = total or sum(k.get("ms", 0) for k in ks) or 1
        return ["", f"Where {what}, {timing or 'each launch run alone'}), slowest first:", "",
                "| kernel | launches | ms | % | GFLOP/s |", "| --- | ---: | ---: | ---: | ---: |"] + [
                f"| {k['kernel']} | {k['launches']:.0f} | {k['ms']:.1f} | {100 * k['ms'] / total:.1f} | "
                f"{(k['gflop'] / k['ms'] * 1e3 if k['gflop'] and k['ms'] else 0):,.1f} |" for k in ks[:rows]]
    for key, v in results.items():
        if key.startswith("kernels-") and v:
            model = key.removeprefix("kernels-")
            lines += kernel_table(f"a training step of {model} goes (f32 base", v["kernels"], v.get("kernel_timing"))
            # the products by launch grid (workgroups x×y×z): which shapes are slow
            if v.get("launch_grids"):
                step = sum(k.get("ms", 0) for k in v["kernels"])
                lines += kernel_table(f"the products of {model}'s training step go by launch grid (f32 base", v["launch_grids"], v.get("kernel_timing"), step, 30)
        if key.startswith("decode-kernels-") and v:
            model = key.removeprefix("decode-kernels-")
            # (older runs timed the decoded tokens alone)
            if any("ms" in k for k in v.get("prefill_kernels", [])):
                lines += kernel_table(f"the {v.get('prompt_tokens')}-token prompt of {model} goes (its prefill", v["prefill_kernels"], v.get("kernel_timing"))
            lines += kernel_table(f"a decoded token of {model} goes ({v.get('prompt_tokens')}-token prompt, per token", v["kernels"], v.get("kernel_timing"))
    # what the GPU's compiler made of each kernel (bench --kernel-stats): one table per run,
    # a column per statistic the driver names
    for key, v in results.items():
        stats = (v or {}).get("kernel_stats")
        if not stats:
            continue
        kernels = [k for k in stats.get("kernels", []) if k.get("executables")]
        if stats.get("note"):
            lines += ["", f"The compiler's statistics of {key}'s kernels: {stats['note']}."]
        if not kernels:
            continue
        names = []
        for k in kernels:
            for e in k["executables"]:
                names += [n for n in e["statistics"] if n not in names]
        registers = next((n for n in names if n.lower() == "register count"), None)
        lines += ["", f"What {stats.get('device', 'the GPU')}'s compiler made of {key}'s kernels (the driver's statistics, "
                  "VK_KHR_pipeline_executable_properties)" + (
                      "; workgroups per SM: how many of a kernel's workgroups one SM of a Hopper GPU (H100, H200) holds at once, "
                      "by its register count, workgroup memory and invocations (65,536 registers, 228 KB, 2,048 invocations, 32 workgroups)"
                      if registers else "") + ":", "",
                  "| kernel | compile ms | invocations | workgroup KB | subgroup | " + " | ".join(names) + (" | workgroups per SM" if registers else "") + " |",
                  "| --- | ---: | ---: | ---: | ---: | " + " | ".join("---:" for _ in names) + (" | ---:" if registers else "") + " |"]
        for k in kernels:
            for e in k["executables"]:
                cell = lambda x: "—" if x is None else (f"{x:,}" if isinstance(x, int) and not isinstance(x, bool) else f"{x}")
                held = f" | {cell(hopper_workgroups_per_sm(e['statistics'].get(registers), k.get('invocations'), k.get('workgroup_bytes')))}" if registers else ""
                lines.append(f"| {k['kernel']} | {k.get('compile_ms', 0):,.0f} | {cell(k.get('invocations'))} | {cell(None if k.get('workgroup_bytes') is None else round(k['workgroup_bytes'] / 1024, 1))} | "
                             f"{e.get('subgroup_size', '')} | " + " | ".join(cell(e["statistics"].get(n)) for n in names) + held + " |")
        failed = [k for k in stats.get("kernels", []) if k.get("error")]
        if failed:
            lines += ["", "Not compiled for their statistics: " + "; ".join(f"{k['kernel']}: {k['error'][:200]}" for k in failed)]
    for key, v in results.items():
        if key.startswith("serve-") and v:
            lines += ["", f"hearth serve, {key.removeprefix('serve-')}: {v['clients']} clients at once, {v['tokens']} greedy tokens each, by --max-batch:", "",
                      "| --max-batch | generated tokens/s | mean s per answer | largest batch |", "| ---: | ---: | ---: | ---: |"]
            lines += [f"| {r['max_batch']} | {r['tokens_per_s']:.1f} | {r['mean_s']:.2f} | {r['largest_batch']} |" for r in v["rows"]]
    if clocks:
        lines += ["", "The GPU's clocks during each step (nvidia-smi every 200 ms; medians; the SM clock's lowest; "
                  "the driver's reasons for holding the clocks down, as its bit mask):", "",
                  "| step | samples | SM MHz (lowest; most) | memory MHz | power W | load % | P-states | held down by |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
        f = lambda x: "—" if x is None else f"{x:,.0f}"
        lines += [f"| {name} | {c['samples']} | {f(c['sm_mhz'])} ({f(c['sm_mhz_min'])}; {f(c['max_sm_mhz'])}) | {f(c['mem_mhz'])} | {f(c['power_w'])} | "
                  f"{f(c['util_pct'])} | {', '.join(c['pstates'])} | {', '.join(c['held_down_by']) or '—'} |" for name, c in clocks.items()]
    missing = [k for k, v in results.items() if v is None]
    if missing:
        lines += ["", "No result (failed or out of time; see the logs): " + ", ".join(missing)]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
