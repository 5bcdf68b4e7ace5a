"""results.json and results.md of make gpu-check, rewritten after every stage (Python standard
library only: it runs even where torch cannot be imported).

    python3 benchmarks/gpu_report.py DIR

Reads what the stages left in DIR: ``stages.jsonl`` (one line per finished stage, written by
benchmarks/gpu_check.sh: stage, status, seconds, note), ``bench.json`` (benchmarks/gpu.py's
header and figures so far), ``device.txt``, ``dispatch.log`` (the backend auto takes for typical
shapes, and why) and the pytest logs (their FAILED / ERROR lines).
A stage cut short by the time budget leaves what it measured: each writer rewrites the files.
"""
from __future__ import annotations

import json
import os
import re
import sys
from typing import Dict, List, Optional

TEST_LOGS = ("tests-quick.log", "tests-long.log")


def _read_jsonl(path: str) -> List[Dict[str, object]]:
    if not os.path.exists(path):
        return []
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    out.append(dict(stage="?", status="unreadable", seconds=0, note=line[:200]))
    return out


def _failures(out_dir: str) -> List[str]:
    lines = []
    for name in TEST_LOGS:
        path = os.path.join(out_dir, name)
        if os.path.exists(path):
            with open(path, errors="replace") as f:
                lines += [f"{name}: {ln.rstrip()}" for ln in f if re.match(r"^(FAILED|ERROR) ", ln)]
    return lines


def _op_table(records: List[dict]) -> List[str]:
    ops = [r for r in records if r.get("section") == "op"]
    if not ops:
        return []
    lines = ["| op | shape | dtype | backend | ms / call | GB/s | speed-up vs torch |", "|---|---|---|---|---:|---:|---:|"]
    for r in ops:
        sp = "%.2fx" % r["speedup_vs_torch"] if r.get("speedup_vs_torch") else "-"
        lines.append(f"| {r['op']} | {r['shape']} | {r['dtype']} | {r['backend']} | {r['ms']:.4f} | {r['gbs']:.1f} | {sp} |")
    return lines + [""]


def _e2e_table(records: List[dict]) -> List[str]:
    e2e = [r for r in records if r.get("section") == "e2e"]
    if not e2e:
        return []
    lines = ["| model | dtype | provider | images / s | ratio to inference | peak MB |", "|---|---|---|---:|---:|---:|"]
    for r in e2e:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['dtype']} | {r['provider']} | failed: {str(r['error'])[:80]} | | |")
        else:
            ratio = "%.2fx" % r["ratio_to_inference"] if r.get("ratio_to_inference") else "-"
            peak = "%.0f" % r["peak_mb"] if r.get("peak_mb") is not None else "-"
            lines.append(f"| {r['model']} | {r['dtype']} | {r['provider']} | {r['images_per_s']:.1f} | {ratio} | {peak} |")
    return lines + [""]


def write(out_dir: str, bench: Optional[Dict[str, object]] = None) -> None:
    """Rewrite DIR/results.json and DIR/results.md from the stages and figures so far.
    ``bench``: gpu.py's {header..., records} (default: DIR/bench.json, if any)."""
    os.makedirs(out_dir, exist_ok=True)
    stages = _read_jsonl(os.path.join(out_dir, "stages.jsonl"))
    if bench is None:
        path = os.path.join(out_dir, "bench.json")
        bench = {}
        if os.path.exists(path):
            try:
                with open(path) as f:
                    bench = json.load(f)
            except json.JSONDecodeError:
                bench = {}
    header = {k: v for k, v in bench.items() if k != "records"}
    records = list(bench.get("records", []))
    failures = _failures(out_dir)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(dict(header, stages=stages, failures=failures, records=records), f, indent=1)
    lines = ["# daam_fast GPU check", ""]
    dev = os.path.join(out_dir, "device.txt")
    if os.path.exists(dev):
        with open(dev, errors="replace") as f:
            info = [ln.rstrip() for ln in f if ln.strip()]
        lines += ["```", *info[-3:], "```", ""]
    if stages:
        lines += ["| stage | status | seconds | note |", "|---|---|---:|---|"]
        lines += [f"| {s.get('stage')} | {s.get('status')} | {s.get('seconds')} | {str(s.get('note', '')).replace('|', '/')} |"
                  for s in stages]
        lines.append("")
    if failures:
        lines += ["## Failures", "", "```", *failures[:40], "```", ""]
    disp = os.path.join(out_dir, "dispatch.log")
    if os.path.exists(disp):
        with open(disp, errors="replace") as f:
            lines += ["## What auto takes, and why", "", "```", *[ln.rstrip() for ln in f][:20], "```", ""]
    if header or records:
        lines += ["## Figures", "", *(f"- {k}: {v}" for k, v in header.items()), ""]
        lines += _op_table(records) + _e2e_table(records)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python3 benchmarks/gpu_report.py DIR")
    write(sys.argv[1])
