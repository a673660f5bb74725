"""benchmarks/multi_gpu.py on the CPU: it runs under torchrun with 1 and 2 ranks and summarises scaling, and its
meta-device build gives the model a normal build gives (rotary tables included, which to_empty leaves undefined)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "multi_gpu.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "TOKENIZERS_PARALLELISM": "false"}


def test_meta_build_materialises_like_a_normal_build():
    sys.path.insert(0, str(SCRIPT.parent))
    import multi_gpu
    from train_speed import build_model

    normal = build_model("tiny", "cpu", torch.float32)
    meta = multi_gpu.build_on_meta(multi_gpu.SHAPES["tiny"], torch.float32)
    multi_gpu.materialise(meta, meta, "cpu")
    buffers = dict(normal.named_buffers())
    for name, buffer in meta.named_buffers():
        torch.testing.assert_close(buffer, buffers[name], msg=name)
    for name, p in meta.named_parameters():
        assert torch.isfinite(p).all() and p.device.type == "cpu", name
        if "norm" in name:
            assert torch.equal(p, torch.ones_like(p)), name
        else:
            assert 0.01 < float(p.detach().std()) < 0.03, name


def test_runs_under_torchrun_on_one_and_two_ranks_and_summarises(tmp_path):
    out = tmp_path / "multi.jsonl"
    for n, cases in ((1, ["lora"]), (2, ["lora", "big_fsdp"])):
        done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
                               str(SCRIPT), "--device", "cpu", "--model", "tiny", "--steps", "2", "--warmup", "1",
                               "--cases", *cases, "--dtype", "bfloat16", "--out", str(out)],
                              env=ENV, capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(r["case"], r["world"], r["status"]) for r in lines] == [("lora", 1, "ok"), ("lora", 2, "ok"),
                                                                      ("big_fsdp", 2, "ok")]
    one, two, big = lines
    assert not two["fsdp"] and big["fsdp"] and len(big["peak_gib_per_gpu"]) == 2 and big["tok_s"] > 0
    # bf16 weights, the same rows and global batch: 2 ranks land on about the loss of 1 (not bit for bit in bf16).
    assert abs(two["loss"] - one["loss"]) < 0.05
    table = subprocess.run([sys.executable, str(SCRIPT), "--summarize", str(out)], capture_output=True, text=True,
                           timeout=60, check=True).stdout
    assert "| lora (tiny) | 2 |" in table and "| big_fsdp (tiny) | 2 |" in table
    efficiency = two["tok_s"] / (2 * one["tok_s"])
    assert f"| {efficiency:.2f} (" in table.splitlines()[3]


def test_big_case_shapes_are_named_for_what_they_are():
    sys.path.insert(0, str(SCRIPT.parent))
    import multi_gpu

    big = multi_gpu.BIG_SHAPES[multi_gpu.BIG_OF["yi6b"]]
    assert multi_gpu.BIG_OF["yi6b"] == "llama70b" and "yi6b" not in multi_gpu.BIG_SHAPES
    assert (big["num_hidden_layers"], big["hidden_size"]) == (80, 8192)  # Llama-2-70B
    assert 120 < multi_gpu.param_gib(big) < 135
