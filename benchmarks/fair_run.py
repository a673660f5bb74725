"""Measure train_speed.py configs alike: each run in a fresh process, several repeats, order alternated, and the
median and spread reported.

Measured on 2026-12-02: inside one process the HF baselines moved with their place in the run (`hf_tutorial` 557
tok/s first and 838 second; `hf_b8_liger` 2,799 on one day and 5,136 on the next), since whatever runs first pays
the allocator's and the kernels' warm-up. Here every run starts cold in its own process and does the same warm-up
(train_speed.py's `--warmup` steps), and repeats go in alternating order (A B C, then C B A, ...), so neither
place nor warm-up favours a config.

    python benchmarks/fair_run.py --model yi6b --configs mt_p16k_nogc hf_tutorial --repeats 3 \
        --out results/fair_yi6b.jsonl
    python benchmarks/fair_run.py --model tiny --device cpu --configs mt_default hf_b8 --repeats 2 --steps 1

Each run's JSON line (train_speed.py's, plus "repeat" and "position") is appended to --out; the table printed at the
end has, per config, the median useful tokens/s, the min-max range, the number of runs and the peak memory.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def order(configs: list[str], repeat: int) -> list[str]:
    """The configs in the order of `repeat`: as given on even repeats, reversed on odd ones."""
    return list(configs) if repeat % 2 == 0 else list(reversed(configs))


def run_once(config: str, passthrough: list[str]) -> dict:
    """One config in a fresh process; its train_speed.py JSON line (status 'failed' with the exit code otherwise)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "line.jsonl"
        command = [sys.executable, str(HERE / "train_speed.py"), "--configs", config, "--out", str(out), *passthrough]
        proc = subprocess.run(command, capture_output=True, text=True)
        if out.is_file() and out.read_text().strip():
            return json.loads(out.read_text().strip().splitlines()[-1])
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
        return {"config": config, "status": "failed", "note": f"exit {proc.returncode}: {tail[0][:200]}"}


def summarise(records: list[dict]) -> list[dict]:
    """Per config, in first-seen order: median, min and max useful tok/s over its ok runs, runs, peak GiB."""
    by_config: dict[str, list[dict]] = {}
    for record in records:
        by_config.setdefault(record["config"], []).append(record)
    rows = []
    for config, runs in by_config.items():
        speeds = [r["useful_tok_s"] for r in runs if r.get("status") == "ok"]
        peaks = [r["peak_gib"] for r in runs if r.get("status") == "ok" and r.get("peak_gib") is not None]
        rows.append({"config": config, "runs": len(runs), "ok": len(speeds),
                     "median": statistics.median(speeds) if speeds else None,
                     "min": min(speeds) if speeds else None, "max": max(speeds) if speeds else None,
                     "peak_gib": max(peaks) if peaks else None,
                     "notes": sorted({r.get("status", "") for r in runs if r.get("status") != "ok"})})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| config | median useful tok/s | range | ok runs | peak GiB |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        if r["median"] is None:
            lines.append(f"| `{r['config']}` | {', '.join(r['notes']) or '-'} | | 0/{r['runs']} | |")
            continue
        spread = f"{r['min']:,.0f}-{r['max']:,.0f}"
        peak = f"{r['peak_gib']:.1f}" if r["peak_gib"] is not None else "-"
        lines.append(f"| `{r['config']}` | {r['median']:,.0f} | {spread} | {r['ok']}/{r['runs']} | {peak} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="append each run's JSON line here")
    parser.add_argument("--max_seconds", type=float, default=1e9,
                        help="start no run after this many seconds (the table still prints)")
    args, passthrough = parser.parse_known_args(argv)  # the rest goes to train_speed.py (--model, --steps, ...)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    started, records = time.perf_counter(), []
    for repeat in range(args.repeats):
        for position, config in enumerate(order(args.configs, repeat)):
            if time.perf_counter() - started > args.max_seconds:
                records.append({"config": config, "status": "skipped (time)", "repeat": repeat})
                continue
            record = {**run_once(config, passthrough), "repeat": repeat, "position": position}
            records.append(record)
            print(json.dumps(record), flush=True)
            if args.out is not None:
                with args.out.open("a") as f:
                    f.write(json.dumps(record) + "\n")
    print(table(summarise(records)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
