#!/usr/bin/env python3
"""Writes docs/performance.md from the JSON of lorakit's benchmarks and the text output of the peer scripts.

One table per operation (a benchmark executable's family: the part of a case name before its first '/', or the
executable for unnamed cases) with lorakit's median time, the peer's median for the case of the same name when the
peer has one, and the ratio peer / lorakit (above 1: lorakit is faster). Peer cases without a lorakit case of the
same name get a table of their own, so nothing measured is dropped.

The tables go between the markers BEGIN and END below; the rest of OUTPUT_MD (the analysis written by hand
under them) is kept. A file without the markers gets them at the top.

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
    lines = [
        BEGIN,
        "## Latest run of `scripts/bench`",
        "",
        "Written by `scripts/bench` (do not edit by hand between the markers): lorakit's benchmarks (`bench/`, Google Benchmark, median of",
        "5 repetitions) and the PyTorch peer scripts (median of their repetitions) run one after the other on the same",
        f"machine, 2 threads each. Times in milliseconds; ratio = peer / lorakit (above 1: lorakit is faster).",
        "",
        f"Run: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {cpu} ({platform.machine()}, "
        f"{os.cpu_count()} CPUs); peer figures: {'yes' if theirs else 'none (PyTorch not installed)'}; "
        f"the peer's OpenBLAS kernel: {kernel}.",
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
    temporary = output + ".tmp"
    with open(temporary, "w") as f:
        f.write(text if text.endswith("\n") else text + "\n")
    os.replace(temporary, output)


if __name__ == "__main__":
    main()
