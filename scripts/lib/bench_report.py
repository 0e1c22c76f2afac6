#!/usr/bin/env python3
"""Writes docs/performance.md from the JSON of lorakit's benchmarks and the text output of the peer scripts.

One table per operation (a benchmark executable's family: the part of a case name before its first '/', or the
executable for unnamed cases) with lorakit's median time, the peer's median for the case of the same name when the
peer has one, and the ratio peer / lorakit (above 1: lorakit is faster). Peer cases without a lorakit case of the
same name get a table of their own, so nothing measured is dropped.

Above the tables, a summary: one row per headline comparison (SUMMARY below: lorakit against the PyTorch peer at
the same 2 threads, against its own base layer, one adapter against many), with its goal, and a plot of the same
ratios (docs/performance-summary.svg, written next to OUTPUT_MD).

The summary and the tables go between the markers BEGIN and END below; the rest of OUTPUT_MD (the analysis written
by hand under them) is kept. A file without the markers gets them at the top.

usage: bench_report.py RESULTS_DIR OUTPUT_MD
"""
import datetime
import glob
import json
import os
import platform
import re
import sys

BEGIN = "<!-- tables written by scripts/bench: begin -->"
END = "<!-- tables written by scripts/bench: end -->"
SETTINGS = re.compile(r"/(?:real_time|iterations:\d+|repeats:\d+|min_time:[0-9.]+)")
UNIT_TO_MS = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}


def ours(results_dir):
    """{executable: [(case, median_ms)]} from Google Benchmark's JSON (median aggregates)."""
    tables = {}
    for path in sorted(glob.glob(os.path.join(results_dir, "bench_*.json"))):
        exe = os.path.basename(path)[: -len(".json")]
        with open(path) as f:
            data = json.load(f)
        for b in data.get("benchmarks", []):
            if b.get("aggregate_name", "median") != "median":
                continue
            # Google Benchmark appends run settings to the name (/real_time, /iterations:5, ...): drop them so the
            # case matches the peer's name.
            case = SETTINGS.sub("", b.get("run_name", b["name"]))
            time_key = "real_time" if b.get("real_time") is not None else "cpu_time"
            ms = b[time_key] * UNIT_TO_MS.get(b.get("time_unit", "ns"), 1e-6)
            tables.setdefault(exe, []).append((case, ms))
    return tables


# `case  median_ms  (min .. max) ...` (lora_step.py) or `case with settings  median ms  ...` (the others): the case
# is the text before the first two-space gap that is followed by a number.
PEER_LINE = re.compile(r"^(.*?\S)\s{2,}([0-9]+(?:\.[0-9]+)?)(?:\s*ms)?(?:\s|$)")


def peers(results_dir):
    """{case: (median_ms, script)} from the peer scripts' lines `case  median_ms  ...`."""
    found = {}
    for path in sorted(glob.glob(os.path.join(results_dir, "peer-*.txt"))):
        script = os.path.basename(path)[len("peer-"): -len(".txt")] + ".py"
        with open(path) as f:
            for line in f:
                m = PEER_LINE.match(line.strip())
                if m:
                    found[m.group(1)] = (float(m.group(2)), script)
    return found


# The summary's rows: (what is compared, lorakit's case, the reference case, goal as the lowest acceptable ratio,
# how the goal reads). A case is ("ours", executable, case name) or ("peer", case name); ratio = reference time /
# lorakit time, so above 1 lorakit's operation is the faster one. Rows whose cases did not run are left out.
SUMMARY = [
    ("LoRA training step, small (128 x 512 x 512, r 8), vs PyTorch",
     ("ours", "bench_lora", "small/lora_step"), ("peer", "small/lora_step"), 3.0, ">= 3x"),
    ("LoRA training step, medium (256 x 1024 x 1024, r 16), vs PyTorch",
     ("ours", "bench_lora", "medium/lora_step"), ("peer", "medium/lora_step"), 1.5, ">= 1.5x"),
    ("LoRA training step, large (512 x 4096 x 4096, r 16), vs PyTorch",
     ("ours", "bench_lora", "large/lora_step"), ("peer", "large/lora_step"), 1.1, ">= 1.1x"),
    ("LoRA training step over the base layer's step, large",
     ("ours", "bench_lora", "large/lora_step"), ("ours", "bench_lora", "large/base_step"), 1 / 1.05, "at most +5%"),
    ("VeRA training step, medium (r 256), vs PyTorch",
     ("ours", "bench_vera", "medium/vera_step"), ("peer", "medium/vera_step"), 1.5, ">= 1.5x"),
    ("VeRA training step, large (r 1024), vs PyTorch",
     ("ours", "bench_vera", "large/vera_step"), ("peer", "large/vera_step"), 1.5, ">= 1.5x"),
    ("DoRA training step, medium, vs PyTorch (PEFT's formulas)",
     ("ours", "bench_dora", "medium/dora_step"), ("peer", "medium/dora_step"), 1.0, ">= 1x"),
    ("DoRA training step over LoRA's, medium",
     ("ours", "bench_dora", "medium/dora_step"), ("ours", "bench_dora", "medium/lora_step"), 1 / 1.25, "at most 1.25x"),
    ("randomized_svd 4096 x 4096, k 64, 2 iterations, vs torch.svd_lowrank",
     ("ours", "bench_kernel_svd", "BM_randomized_svd/n:4096/k:64/iters:2"),
     ("peer", "svd_lowrank m=4096 n=4096 k=64 oversample=10 niter=2"), 1.5, ">= 1.5x"),
    ("StreamingSvd::update, 4096 features, 512 rows, k 32, vs incremental PCA in PyTorch",
     ("ours", "bench_kernel_svd", "BM_streaming_svd_update/features:4096/tokens:512/k:32"),
     ("peer", "eva_ipca features=4096 tokens=512 k=32"), 2.0, ">= 2x"),
    ("lora_da_initialize, in = out = 1024, vs PyTorch",
     ("ours", "bench_lora_da", "lora_da_init/automatic/1024"), ("peer", "lora_da_init in=out=1024 r=8 (float64)"),
     2.0, ">= 2x"),
    ("Adapter bank, 2048 rows on 16 adapters of ranks 4..64 (4096 x 4096), vs all rows on one adapter",
     ("ours", "bench_bank", "large/bank_mixed"), ("ours", "bench_bank", "large/bank_one_adapter"), 1 / 1.3,
     "at most 1.3x"),
    ("Adapter bank, same batch, vs PEFT's mixed-batch loop in PyTorch (2 threads against 1)",
     ("ours", "bench_bank", "large/bank_mixed"), ("peer", "large/peft_mixed_batch"), 3.0, ">= 3x"),
    ("Adapter bank, same batch, vs the same loop over sub-batches in C++ (Lora::forward)",
     ("ours", "bench_bank", "large/bank_mixed"), ("ours", "bench_bank", "large/peft_loop"), None, "-"),
    ("Adapter bank, same batch, vs merging a weight per request",
     ("ours", "bench_bank", "large/bank_mixed"), ("ours", "bench_bank", "large/merge_per_request"), None, "-"),
]


def time_of(case, mine, theirs):
    """The median time of a SUMMARY case in ms, or None when it did not run."""
    if case[0] == "peer":
        return theirs[case[1]][0] if case[1] in theirs else None
    return dict(mine.get(case[1], [])).get(case[2])


def summary_rows(mine, theirs):
    """[(what, lorakit ms, reference ms, ratio, goal text, met)] for the SUMMARY rows that ran."""
    rows = []
    for what, ours_case, reference_case, goal, goal_text in SUMMARY:
        a, b = time_of(ours_case, mine, theirs), time_of(reference_case, mine, theirs)
        if a is None or b is None:
            continue
        ratio = b / a
        met = "-" if goal is None else ("yes" if ratio >= goal else "**no**")
        rows.append((what, a, b, ratio, goal_text, met))
    return rows


def summary_svg(rows, title):
    """A horizontal bar chart of the summary's ratios on a log scale, with 1 (level) and each goal marked."""
    import math
    width, left, right, bar, gap, top = 900, 430, 40, 16, 8, 40
    height = top + len(rows) * (bar + gap) + 40
    low, high = 0.25, 32.0
    span = math.log2(high) - math.log2(low)

    def x_of(v):
        v = min(max(v, low), high)
        return left + (math.log2(v) - math.log2(low)) / span * (width - left - right)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
           f'font-size="11">', f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="13">{title}</text>']
    for tick in (0.25, 0.5, 1, 2, 4, 8, 16, 32):
        x = x_of(tick)
        out.append(f'<line x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{height - 30}" stroke="'
                   f'{"#444" if tick == 1 else "#ddd"}"/>')
        out.append(f'<text x="{x:.1f}" y="{height - 16}" text-anchor="middle">{tick:g}x</text>')
    for i, (what, _, _, ratio, goal_text, met) in enumerate(rows):
        y = top + i * (bar + gap)
        color = "#2a7ab9" if met != "**no**" else "#c0392b"
        x0, x1 = x_of(1.0), x_of(ratio)
        label = what if len(what) <= 72 else what[:69] + "..."
        out.append(f'<text x="{left - 6}" y="{y + bar - 4}" text-anchor="end">{label}</text>')
        out.append(f'<rect x="{min(x0, x1):.1f}" y="{y}" width="{abs(x1 - x0):.1f}" height="{bar}" fill="{color}"/>')
        out.append(f'<text x="{max(x0, x1) + 4:.1f}" y="{y + bar - 4}">{ratio:.2f}</text>')
    out.append(f'<text x="{left}" y="{height - 2}">reference time / lorakit time (log scale; above 1: lorakit '
               f'faster; red: goal not met)</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_atomically(path, text):
    temporary = path + ".tmp"
    with open(temporary, "w") as f:
        f.write(text if text.endswith("\n") else text + "\n")
    os.replace(temporary, path)


def fmt(ms):
    return f"{ms:.3f}" if ms < 10 else f"{ms:.1f}"


def read_line(results_dir, name, default):
    """The first line of RESULTS_DIR/name (written by scripts/bench), or `default`."""
    path = os.path.join(results_dir, name)
    if not os.path.exists(path):
        return default
    with open(path) as f:
        return (f.readline().strip() or default).removeprefix("peer OpenBLAS kernel: ")


def main():
    results_dir, output = sys.argv[1], sys.argv[2]
    mine, theirs = ours(results_dir), peers(results_dir)
    cpu = read_line(results_dir, "cpu.txt", platform.processor() or "unknown CPU")
    kernel = read_line(results_dir, "peer-kernel.txt", "not recorded")
    used = set()
    run = (f"Run: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {cpu} ({platform.machine()}, "
           f"{os.cpu_count()} CPUs); peer figures: {'yes' if theirs else 'none (PyTorch not installed)'}; "
           f"the peer's OpenBLAS kernel: {kernel}.")
    lines = [BEGIN]
    rows = summary_rows(mine, theirs)
    if rows:
        plot = os.path.join(os.path.dirname(output), "performance-summary.svg")
        write_atomically(plot, summary_svg(rows, f"lorakit against its references, {cpu}, 2 threads"))
        lines += ["## Summary of the latest run of `scripts/bench`", "", run, "",
                  "Ratio = reference time / lorakit time (above 1: lorakit's operation is faster); the peer is PyTorch "
                  "at the same 2 threads; medians. Every case is in the tables below.", "",
                  "| comparison | lorakit (ms) | reference (ms) | ratio | goal | met |",
                  "| --- | ---: | ---: | ---: | --- | --- |"]
        lines += [f"| {what} | {fmt(a)} | {fmt(b)} | {ratio:.2f} | {goal} | {met} |"
                  for what, a, b, ratio, goal, met in rows]
        lines += ["", f"![the summary's ratios]({os.path.basename(plot)})", ""]
    lines += [
        "## Every case of the latest run of `scripts/bench`",
        "",
        "Written by `scripts/bench` (do not edit by hand between the markers): lorakit's benchmarks (`bench/`, Google "
        "Benchmark, median of 5 repetitions) and the PyTorch peer scripts (median of their repetitions) run one after "
        "the other on the same machine, 2 threads each. Times in milliseconds; ratio = peer / lorakit (above 1: "
        "lorakit is faster).",
        "",
        run,
    ]
    for exe, cases in mine.items():
        families = {}
        for case, ms in cases:
            families.setdefault(case.split("/")[0] if "/" in case else exe, []).append((case, ms))
        for family, rows in families.items():
            lines += ["", f"### {family} (`{exe}`)", "", "| case | lorakit (ms) | peer (ms) | ratio |", "| --- | ---: | ---: | ---: |"]
            for case, ms in rows:
                peer = theirs.get(case)
                if peer:
                    used.add(case)
                    lines.append(f"| {case} | {fmt(ms)} | {fmt(peer[0])} | {peer[0] / ms:.2f} |")
                else:
                    lines.append(f"| {case} | {fmt(ms)} | - | - |")
    rest = [(case, v) for case, v in theirs.items() if case not in used]
    if rest:
        lines += ["", "### Peer cases without a lorakit case of the same name", "", "| case | script | peer (ms) |",
                  "| --- | --- | ---: |"]
        lines += [f"| {case} | {script} | {fmt(ms)} |" for case, (ms, script) in rest]
    lines.append(END)
    tables = "\n".join(lines)
    previous = open(output).read() if os.path.exists(output) else "# Performance\n"
    if BEGIN in previous and END in previous:
        head, rest = previous.split(BEGIN, 1)
        text = head + tables + rest.split(END, 1)[1]
    else:
        title, _, body = previous.partition("\n")
        text = title + "\n\n" + tables + "\n" + body
    write_atomically(output, text)


if __name__ == "__main__":
    main()
