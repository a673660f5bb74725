"""`mathtune rlhf` as a user runs it: --eval_benchmarks measures before and after into the run folder, and Ctrl-C
(SIGINT to the process) saves a checkpoint, prints the resume line and exits 130; that line resumes the run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from mathtune.cli import main


def _grpo_argv(model_dir: Path, questions: Path, out: Path, *more: str) -> list[str]:
    return ["rlhf", "--rlhf_type", "grpo", "--model", str(model_dir), "--dataset", str(questions),
            "--num_generations", "4", "--batch_size", "4", "--max_completion_length", "8", "--logging_steps", "1",
            "--output_dir", str(out), *more]


def test_eval_benchmarks_are_measured_before_and_after(tiny_model_dir, questions, tmp_path, monkeypatch, capsys):
    from mathtune.evaluate import runner

    # Few tokens per answer (the CPU default is 256): the flags of `rlhf` leave eval's length to the device.
    monkeypatch.setitem(runner.DEVICE_DEFAULTS, "cpu", runner.DeviceDefaults(max_new_tokens=8, limit=50))
    argv = _grpo_argv(tiny_model_dir, questions, tmp_path / "out", "--max_steps", "1", "--eval_benchmarks",
                      "rg:arithmetic", "--eval_limit", "2")
    assert main(argv) == 0
    (run_dir,) = (tmp_path / "out" / "tiny-llama-grpo").glob("v*")
    for when in ("before", "after"):
        summary = json.loads((run_dir / "eval" / when / "summary.json").read_text())
        assert summary["benchmarks"]["rg:arithmetic"]["n"] == 2, when
        bench = run_dir / "eval" / when / summary["benchmarks"]["rg:arithmetic"]["dir"] / "predictions.jsonl"
        assert len(bench.read_text().splitlines()) == 2
    assert (run_dir / "checkpoint-1").is_dir()
    assert "rg:arithmetic" in capsys.readouterr().out  # the before/after comparison is printed


def test_eval_steps_answer_the_benchmarks_during_the_run(tiny_model_dir, questions, tmp_path, monkeypatch, capsys):
    from mathtune.evaluate import runner
    from mathtune.rl.curves import _before, _companions

    monkeypatch.setitem(runner.DEVICE_DEFAULTS, "cpu", runner.DeviceDefaults(max_new_tokens=8, limit=50))
    argv = _grpo_argv(tiny_model_dir, questions, tmp_path / "out", "--max_steps", "3", "--eval_steps", "2",
                      "--eval_benchmarks", "rg:arithmetic", "--eval_limit", "3")
    from mathtune import sft

    evaluate, modes = sft.evaluate_model, []

    def recording(model, *args, **kwargs):  # every evaluation of the run goes through sft.evaluate_model
        modes.append(model.training)
        return evaluate(model, *args, **kwargs)

    monkeypatch.setattr(sft, "evaluate_model", recording)
    assert main(argv) == 0
    assert modes == [False, False, False]  # before, at step 2, after: answered without dropout
    (run_dir,) = (tmp_path / "out" / "tiny-llama-grpo").glob("v*")
    # step 2 mid-run; step 3, the last, is the "after" evaluation as without --eval_steps
    assert sorted(p.name for p in (run_dir / "eval").iterdir()) == ["after", "before", "step-2"]
    summary = json.loads((run_dir / "eval" / "step-2" / "summary.json").read_text())
    accuracy = summary["benchmarks"]["rg:arithmetic"]["accuracy"]
    assert summary["benchmarks"]["rg:arithmetic"]["n"] == 3
    records = [json.loads(line) for line in (run_dir / "logging.jsonl").read_text().splitlines()]
    held_out = [r for r in records if "eval_accuracy/rg:arithmetic" in r]
    assert held_out == [{"step": 2, "eval_accuracy/rg:arithmetic": accuracy}]
    assert [r["step"] for r in records if "reward" in r] == [1, 2, 3]  # the training records are untouched
    assert f"step 2: held-out accuracy rg:arithmetic {accuracy:.1%}" in capsys.readouterr().out
    assert _companions("eval_accuracy", records) == ["eval_accuracy/rg:arithmetic"]  # its curve gets a panel,
    before = json.loads((run_dir / "eval" / "before" / "summary.json").read_text())["benchmarks"]["rg:arithmetic"]
    assert _before(run_dir, "rg:arithmetic") == before["accuracy"]  # which starts at step 0 from eval/before
    assert (run_dir / "images" / "grpo_curves.png").stat().st_size > 0


def test_ctrl_c_saves_prints_the_resume_line_and_exits_130(tiny_model_dir, questions, tmp_path):
    out = tmp_path / "out"
    argv = _grpo_argv(tiny_model_dir, questions, out, "--max_steps", "1000", "--save_steps", "1000")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    log = tmp_path / "rlhf.txt"
    with log.open("w") as sink:
        process = subprocess.Popen([sys.executable, "-m", "mathtune.cli", *argv], env=env, stdout=sink,
                                   stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        logged = lambda: sum(len(p.read_text().splitlines()) for p in out.glob("*/v*/logging.jsonl"))  # noqa: E731
        while logged() < 2 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process.poll() is None, log.read_text()[-2000:]
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    text = log.read_text()
    assert code == 130, text[-2000:]
    assert "Interrupted: saving a checkpoint after this step" in text
    step = int(re.search(r"Stopped at step (\d+);", text).group(1))
    assert 2 <= step < 1000
    (checkpoint,) = out.glob(f"*/v*/checkpoint-{step}")
    assert (checkpoint / "trainer_state.json").is_file() and (checkpoint / "adapter_model.safetensors").is_file()
    assert f"resume with --resume_from_checkpoint {checkpoint}" in text
    assert "Traceback" not in text

    # The line printed resumes the run: one more step, in the same folder.
    assert main([*argv[:-4], "--max_steps", str(step + 1), "--resume_from_checkpoint", str(checkpoint)]) == 0
    assert (checkpoint.parent / f"checkpoint-{step + 1}").is_dir()
    assert [json.loads(line)["step"] for line in (checkpoint.parent / "logging.jsonl").read_text().splitlines()] \
        == list(range(1, step + 2))
