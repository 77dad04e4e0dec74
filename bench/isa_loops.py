#!/usr/bin/env python3
"""What a GPU compiler made of each kernel's main loop, from `hearth bench ops --json
--kernel-stats --kernel-ir DIR` on Mesa's RADV (AMD's ISA in each kernel's *.Assembly.txt):
a markdown table of each kernel's registers, occupancy and spills (the driver's statistics),
and the instructions of its main loop by kind.

The main loop is the smallest loop (a backward branch to a label) that holds a workgroup
barrier (where the kernel has one) and at least half of the kernel's multiply-adds (v_fmac, v_fma, v_fma_mix_f32, v_pk_fma,
VOPD's v_dual_fmac) or matrix products (v_wmma): one stage of the reduction, staging and sums
together. Its counts are static: every instruction between the loop's label and its branch
once, loops nested in it (the cooperative kernels' staging passes) once too, and branches not
taken (dropout, blocks, a term: uniform for a launch) counted as if they ran.

usage: bench/isa_loops.py BENCH_JSON IR_DIR
"""
import json
import re
import sys
from pathlib import Path

LABEL = re.compile(r"^(BB\d+):")
BRANCH = re.compile(r"^(s_branch|s_cbranch_\w+)\s+(BB\d+)")


def slug(name):
    return "-".join(p for p in re.sub(r"[^A-Za-z0-9]", "-", name).split("-") if p)


def kind(op):
    """An instruction's kind, for the table's columns."""
    if op.startswith("v_wmma") or op.startswith("v_swmmac"):
        return "matrix"
    if op.startswith("v_dual_fmac") or op.startswith("v_pk_fma_f32"):
        return "fma2"
    # (v_fma_mix_f32: f16 tiles' products into f32; v_fma_mixlo_f16 is a rounding to f16)
    if op.startswith(("v_fmac_f32", "v_fma_f32", "v_fmaak_f32", "v_fmamk_f32", "v_mac_f32", "v_fma_mix_f32")):
        return "fma"
    if op.startswith("ds_load") or op.startswith("ds_read"):
        return "lds load"
    if op.startswith("ds_store") or op.startswith("ds_write"):
        return "lds store"
    if op.startswith(("buffer_load", "global_load")):
        return "memory load"
    if op.startswith(("buffer_store", "global_store")):
        return "memory store"
    if op == "s_barrier":
        return "barrier"
    if op.startswith(("s_waitcnt", "s_delay_alu", "s_nop", "s_clause")):
        return "wait"
    if op.startswith("v_"):
        return "other valu"
    return "scalar"


def instructions(path):
    """(labels: name -> index of the next instruction, [(op, operands)])."""
    labels, ops = {}, []
    for line in path.read_text().splitlines():
        m = LABEL.match(line)
        if m:
            labels[m.group(1)] = len(ops)
            continue
        text = line.split(";")[0].strip()
        if text and line.startswith(("\t", " ")):
            op, _, rest = text.partition(" ")
            ops.append((op, rest.strip()))
    return labels, ops


def loops(labels, ops):
    """Every loop's [start, end] instruction indices: a branch back to a label."""
    found = []
    for i, (op, rest) in enumerate(ops):
        m = BRANCH.match(f"{op} {rest}")
        if m and m.group(2) in labels and labels[m.group(2)] <= i:
            found.append((labels[m.group(2)], i))
    return found


def main_loop(labels, ops):
    """The main loop's [start, end] instruction indices, or None."""
    work = [i for i, (op, _) in enumerate(ops) if kind(op) in ("matrix", "fma", "fma2")]
    if not work:
        return None
    # (a workgroup of one subgroup needs no barrier: ACO drops it)
    barriers = any(op == "s_barrier" for op, _ in ops)
    best = None
    for start, end in loops(labels, ops):
        inside = sum(1 for i in work if start <= i <= end)
        barrier = not barriers or any(ops[i][0] == "s_barrier" for i in range(start, end + 1))
        if barrier and 2 * inside >= len(work) and (best is None or end - start < best[1] - best[0]):
            best = (start, end)
    return best


def row(kernel, ir_dir):
    name = kernel["kernel"]
    if "error" in kernel:
        return f"| {name} | not compiled: {kernel['error']} |" + " |" * 9
    stats = (kernel.get("executables") or [{}])[0].get("statistics", {})
    spills = f"{stats.get('Spilled VGPRs', '?')} / {stats.get('Spilled SGPRs', '?')}"
    head = f"| {name} | {stats.get('VGPRs', '?')} | {stats.get('Subgroups per SIMD', '?')} | {stats.get('Scratch size', '?')} | {spills} | {kernel.get('compile_ms', 0):,.0f}"
    asm = ir_dir / f"{slug(name)}.0.Assembly.txt"
    if not asm.exists():
        return head + " | no assembly |" + " |" * 4
    labels, ops = instructions(asm)
    loop = main_loop(labels, ops)
    if loop is None:
        return head + " | no loop of multiply-adds |" + " |" * 4
    counts = {}
    for i in range(loop[0], loop[1] + 1):
        k = kind(ops[i][0])
        counts[k] = counts.get(k, 0) + 1
    inner = sum(1 for start, end in loops(labels, ops) if loop[0] < start and end < loop[1])
    total = loop[1] - loop[0] + 1
    work = counts.get("matrix", 0) or counts.get("fma", 0) + counts.get("fma2", 0)
    what = f"{counts['matrix']} matrix" if counts.get("matrix") else f"{counts.get('fma', 0) + 2 * counts.get('fma2', 0)} fma"
    valu = counts.get("other valu", 0)
    lds = f"{counts.get('lds load', 0)} / {counts.get('lds store', 0)}"
    return head + f" | {total:,} ({inner} loops in it) | {what} ({100 * work / total:.0f} %) | {valu:,} | {lds} | {counts.get('memory load', 0)} |"


def main():
    bench, ir_dir = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2])
    stats = bench.get("kernel_stats") or {}
    print(f"{stats.get('device', '?')}: " + stats.get("note", "the driver's statistics and ACO's assembly"))
    print()
    print("| kernel | VGPRs | subgroups per SIMD | scratch bytes | spilled VGPRs / SGPRs | compile ms | main loop: instructions | multiply-adds (share) | other vector ALU | LDS loads / stores | memory loads |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for kernel in stats.get("kernels", []):
        print(row(kernel, ir_dir))


if __name__ == "__main__":
    main()
