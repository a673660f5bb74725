"""The run folder: one writer at a time (a stale lock from a killed process is no lock), log lines whole or absent
with a true message, and SIGTERM saving like Ctrl-C."""

import errno
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mathtune.config import RunArgs, RunConfig
from mathtune.errors import UserError
from mathtune.run_dir import RunDir, RunLog


def _hold_lock(folder: str, ready, release) -> None:
    with RunDir(RunConfig(), Path(folder)) as run:
        run.lock()
        ready.set()
        release.wait(30)


def test_a_second_writer_is_refused_and_a_killed_ones_lock_is_stale(tmp_path):
    run_dir = tmp_path / "v0-20250101-000000"
    run_dir.mkdir()
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(run_dir), ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        second = RunDir(RunConfig(), run_dir)
        with pytest.raises(UserError, match=f"run folder '{run_dir}' is in use by another mathtune process"):
            second.lock()
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # killed, not ended: its lock must not outlive it
        holder.join(30)
    with RunDir(RunConfig(), run_dir) as third:
        third.lock()
    assert sorted(p.name for p in run_dir.iterdir()) == []  # the lock leaves no file in the run folder


def test_auto_resume_of_a_run_in_use_exits_2_in_one_line(tmp_path, capsys):
    from mathtune.run_dir import resume_point

    output = tmp_path / "output"
    cfg = RunConfig(run=RunArgs(output_dir=str(output), resume_from_checkpoint="auto"))
    run_dir = output / "tiny" / "v0-20250101-000000"
    run_dir.mkdir(parents=True)
    (run_dir / "args.json").write_text(cfg.to_json())
    assert resume_point(cfg, "tiny") == (None, run_dir)
    with RunDir.open(cfg, "tiny") as first:
        assert first.path == run_dir
        with pytest.raises(UserError, match="is in use by another mathtune process"):
            RunDir.open(cfg, "tiny")
    RunDir.open(cfg, "tiny").close()  # free again once the first has let go


def _fill_disk_after(limit: int, monkeypatch) -> None:
    real = os.write

    def write(fd, data):
        real(fd, bytes(data)[:limit])  # part of the line reaches the disk, then it is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", write)


def test_a_failed_log_write_leaves_whole_lines_and_a_true_message(tmp_path, monkeypatch):
    log = RunLog(tmp_path / "logging.jsonl")
    log.write({"step": 1, "loss": 1.5})
    before = (tmp_path / "logging.jsonl").read_bytes()
    _fill_disk_after(7, monkeypatch)
    with pytest.raises(UserError, match=r"No space left on device; no checkpoint was saved yet$"):
        log.write({"step": 2, "loss": 1.25})
    monkeypatch.undo()
    assert (tmp_path / "logging.jsonl").read_bytes() == before
    (tmp_path / "checkpoint-1").mkdir()
    (tmp_path / "checkpoint-1" / "trainer_state.json").write_text("{}")
    _fill_disk_after(3, monkeypatch)
    with pytest.raises(UserError, match=r"No space left on device; earlier checkpoints are intact$"):
        log.write({"step": 2, "loss": 1.25})
    monkeypatch.undo()
    assert (tmp_path / "logging.jsonl").read_bytes() == before
    log.write({"step": 2, "loss": 1.25})
    assert [json.loads(line)["step"] for line in (tmp_path / "logging.jsonl").read_text().splitlines()] == [1, 2]


def test_sigterm_saves_a_checkpoint_and_exits_130(tmp_path, tiny_model_dir):
    data = tmp_path / "math.jsonl"
    data.write_text("".join(json.dumps({"query": f"What is {a} + 2?", "response": f"{a + 2}"}) + "\n"
                            for a in range(16)))
    output = tmp_path / "output"
    argv = [sys.executable, "-m", "mathtune", "sft", "--model", str(tiny_model_dir), "--dataset", str(data),
            "--output_dir", str(output), "--max_steps", "100000", "--save_steps", "100000", "--logging_steps", "1",
            "--batch_size", "4", "--gradient_accumulation_steps", "1", "--max_length", "128"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list(output.glob("*/v*/logging.jsonl")) and time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, err
    (run_dir,) = output.glob("*/v*")
    (checkpoint,) = run_dir.glob("checkpoint-*")
    assert (checkpoint / "trainer_state.json").is_file() and (checkpoint / "adapter_model.safetensors").is_file()
    step = json.loads((checkpoint / "trainer_state.json").read_text())["global_step"]
    assert f"Stopped at step {step}; resume with --resume_from_checkpoint {checkpoint}" in out
    assert "Terminated (SIGTERM): saving a checkpoint after this step" in out
