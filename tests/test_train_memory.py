"""memory_gib in logging.jsonl: on a CPU the process's peak resident memory, not 0.0."""

import json
import resource
import sys

from mathtune.train import peak_rss_gib


def test_peak_rss_is_this_process_peak():
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert peak_rss_gib() == (peak / 2**30 if sys.platform == "darwin" else peak / 2**20)
    assert 0.01 < peak_rss_gib() < 1024


def test_a_cpu_run_logs_its_peak_memory(tmp_path, tiny_model_dir, train_tiny_run):
    run_dir = train_tiny_run(tmp_path, tiny_model_dir)
    records = [json.loads(line) for line in (run_dir / "logging.jsonl").read_text().splitlines()]
    memory = [r["memory_gib"] for r in records if "loss" in r]
    assert memory and all(m > 0.01 for m in memory)  # torch alone takes more than 10 MiB
    assert memory == sorted(memory)  # a peak never falls
    assert memory[-1] <= peak_rss_gib() + 0.001  # trained in this process: its peak so far bounds the logged one
