"""Resume after a crash with nothing lost: a run killed at random moments (SIGKILL, Ctrl-C) and resumed with
`--resume_from_checkpoint auto` ends with the same adapter weights, bit for bit, and the same loss history as a run
that was never interrupted. LoRA dropout stays on, so the RNG state must come back exactly too."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mathtune.cli import main

MAX_STEPS = 12


def sft_argv(model_dir: Path, data: Path, output: Path) -> list[str]:
    return ["sft", "--model", str(model_dir), "--dataset", str(data), "--output_dir", str(output),
            "--max_steps", str(MAX_STEPS), "--save_steps", "1", "--logging_steps", "1", "--lora_dropout", "0.05",
            "--batch_size", "2", "--gradient_accumulation_steps", "2", "--learning_rate", "0.01", "--max_length", "256",
            "--eval_steps", "5"]


def history(run_dir: Path) -> tuple[list, list]:
    """(step, loss) of every training line and (step, eval_loss) of every evaluation line of logging.jsonl."""
    records = [json.loads(line) for line in (run_dir / "logging.jsonl").read_text().splitlines()]
    return ([(r["step"], r["loss"]) for r in records if "loss" in r],
            [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r])


def final_run(output: Path) -> Path:
    (run_dir,) = [p.parent for p in output.glob(f"*/v*/checkpoint-{MAX_STEPS}")]
    return run_dir


def assert_same_result(run_dir: Path, reference: Path) -> None:
    losses, evals = history(run_dir)
    assert [s for s, _ in losses] == list(range(1, MAX_STEPS + 1)), "duplicate or missing steps"
    assert (losses, evals) == history(reference)
    mine = load_file(run_dir / f"checkpoint-{MAX_STEPS}" / "adapter_model.safetensors")
    theirs = load_file(reference / f"checkpoint-{MAX_STEPS}" / "adapter_model.safetensors")
    assert mine.keys() == theirs.keys()
    for name in theirs:
        assert torch.equal(mine[name], theirs[name]), name


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    rows = [{"query": f"What is {a} + {b}?", "response": f"{a} + {b} = {a + b}. The answer is \\boxed{{{a + b}}}."}
            for a in range(1, 9) for b in range(1, 6)]
    path = tmp_path_factory.mktemp("resume-data") / "math.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model_dir, data) -> Path:
    """The uninterrupted run (in this process: the subprocesses below must match it bit for bit)."""
    output = tmp_path_factory.mktemp("reference")
    assert main(sft_argv(tiny_model_dir, data, output)) == 0
    run_dir = final_run(output)
    assert len(history(run_dir)[0]) == MAX_STEPS
    return run_dir


def logged_steps(output: Path) -> int:
    logs = list(output.glob("*/v*/logging.jsonl"))
    return sum('"loss"' in line for line in logs[0].read_text().splitlines()) if logs else 0


def test_killed_and_interrupted_run_resumes_to_the_same_weights_and_losses(tmp_path, tiny_model_dir, data, reference):
    output = tmp_path / "output"
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "mathtune.cli", *sft_argv(tiny_model_dir, data, output)]
    rng = random.Random(20261201)
    # Strike once training has logged `target` steps, plus a random moment: within a step, while saving a checkpoint
    # or while pruning an old one. Targets are spread so that steps always remain, however fast the machine, and each
    # lies past the lines an earlier attempt logged (the resumed process drops those it has no checkpoint for).
    targets = [rng.randint(1, 3), rng.randint(4, 6), rng.randint(7, 9)]
    logged_before = 0
    for attempt, how in enumerate([signal.SIGKILL, signal.SIGINT, signal.SIGKILL, None]):
        log = tmp_path / f"attempt{attempt}.txt"
        with log.open("w") as sink:
            process = subprocess.Popen(command + (["--resume_from_checkpoint", "auto"] if attempt else []), env=env,
                                       stdout=sink, stderr=subprocess.STDOUT)
        if how is None:
            assert process.wait(timeout=300) == 0, log.read_text()[-2000:]
            break
        target = max(targets[attempt], logged_before + 1)
        assert target < MAX_STEPS
        deadline = time.monotonic() + 300
        while logged_steps(output) < target and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.05))
        assert process.poll() is None, log.read_text()[-2000:]
        process.send_signal(how)
        code = process.wait(timeout=120)
        logged_before = logged_steps(output)
        if how == signal.SIGINT:
            text = log.read_text()
            assert code == 130, text[-2000:]
            assert "Interrupted: saving a checkpoint after this step" in text
            step = int(text.split("Stopped at step ")[1].split(";")[0])
            stopped_at = next(output.glob(f"*/v*/checkpoint-{step}"))
            assert f"resume with --resume_from_checkpoint {stopped_at}" in text
            assert logged_steps(output) == step  # it stopped right after saving that step
    run_dir = final_run(output)
    assert len(list(output.glob("*/v*"))) == 1, "a resume started a new run instead of continuing"
    assert not list(run_dir.glob(".*")), "a staging folder or temporary file was left behind"
    assert_same_result(run_dir, reference)


def test_second_ctrl_c_quits_at_once_without_saving(tmp_path, tiny_model_dir, data, monkeypatch, capsys):
    from mathtune import fastpath, run_dir

    real_loss, real_save, saved = fastpath.loss_sum, run_dir.save_checkpoint, []

    def counted_save(*args, **kwargs):
        saved.append(real_save(*args, **kwargs))
        return saved[-1]

    def interrupted_twice(model, batch, device, fused=None):
        if len(saved) == 4 and model.training:  # step 5 has begun
            saved.append(None)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # let the first Ctrl-C be handled before the second arrives
            os.kill(os.getpid(), signal.SIGINT)
        return real_loss(model, batch, device, fused)

    monkeypatch.setattr(run_dir, "save_checkpoint", counted_save)
    monkeypatch.setattr(fastpath, "loss_sum", interrupted_twice)
    output = tmp_path / "output"
    assert main(sft_argv(tiny_model_dir, data, output)) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "mathtune sft: interrupted" and not any("Traceback" in line for line in err)
    (run_dir,) = output.glob("*/v*")
    assert sorted(p.name for p in run_dir.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-4"]
    assert not list(run_dir.glob(".*")), "the step that was cut short left a staging folder behind"
    assert [s for s, _ in history(run_dir)[0]] == [1, 2, 3, 4]


def test_resume_inside_a_logging_window_and_across_an_epoch(tmp_path, tiny_model_dir, tiny_tokenizer,
                                                           train_in_folder):
    """Loss lines cover 3 steps; the run stops after step 4 (Ctrl-C), so step 4's loss sums must come back from the
    checkpoint for the line at step 6 to be right. 24 rows of 4 a step: step 7 is in the second epoch."""
    from mathtune.data.tokenize import encode_conversation
    from mathtune.fastpath import FastPath
    from mathtune.model import attach_lora, load_model
    from mathtune.sft import load_weights

    data = [encode_conversation(tiny_tokenizer, [{"role": "user", "content": f"What is {a} + {b}?"},
                                                 {"role": "assistant", "content": f"{a} + {b} = {a + b}."}])
            for a in range(1, 7) for b in range(1, 5)]
    args = dict(learning_rate=5e-3, batch_size=4, gradient_accumulation_steps=1, max_steps=7, logging_steps=3,
                save_steps=1, eval_steps=100, warmup_ratio=0.0, seed=7, save_total_limit=None)
    real = FastPath(torch.device("cpu")).loss_fn

    def model(seed):
        torch.manual_seed(seed)
        return attach_lora(load_model(tiny_model_dir, "fp32", "cpu"), 8, 16, 0.05, "all-linear")

    def run(run_dir, m, resume=None, loss_fn=real):
        return train_in_folder(run_dir, m, tiny_tokenizer, data, [], resume=resume, loss_fn=loss_fn, **args)

    whole = run(tmp_path / "whole", model(0))
    calls = {"n": 0}

    def interrupt_at_step_4(m, batch):
        calls["n"] += 1  # one micro-batch a step: the rows of a step fit one packed sequence
        if calls["n"] == 4:
            os.kill(os.getpid(), signal.SIGINT)
        return real(m, batch)

    first = run(tmp_path / "parts", model(0), loss_fn=interrupt_at_step_4)
    assert first.interrupted and first.global_step == 4 and first.last_checkpoint.name == "checkpoint-4"
    resumed_model = model(1)  # other initial LoRA weights: everything must come from the checkpoint
    load_weights(resumed_model, first.last_checkpoint, lora=True)
    second = run(tmp_path / "parts", resumed_model, resume=first.last_checkpoint)
    assert second.global_step == 7 and not second.interrupted
    assert history(tmp_path / "parts") == history(tmp_path / "whole")
    assert [s for s, _ in history(tmp_path / "whole")[0]] == [3, 6, 7]
    mine, theirs = (load_file(r.last_checkpoint / "adapter_model.safetensors") for r in (second, whole))
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in theirs)


def test_auto_starts_restarts_or_resumes_the_run_with_the_same_options(tmp_path, tiny_model_dir, data, capsys):
    output = tmp_path / "output"
    argv = [*sft_argv(tiny_model_dir, data, output), "--max_steps", "2", "--resume_from_checkpoint", "auto"]
    assert main(argv) == 0  # nothing to resume yet: a new run
    assert "no run with these options" in capsys.readouterr().out
    (run_dir,) = output.glob("*/v*")
    finished = (run_dir / "checkpoint-2" / "adapter_model.safetensors").read_bytes()
    expected = history(run_dir)

    # Killed while saving its first checkpoint: a log line, a staging folder, no checkpoint.
    for checkpoint in run_dir.glob("checkpoint-*"):
        shutil.rmtree(checkpoint)
    (run_dir / ".checkpoint-1.partial").mkdir()
    (run_dir / "logging.jsonl").write_text((run_dir / "logging.jsonl").read_text().splitlines()[0] + "\n")
    assert main(argv) == 0
    assert "has no complete checkpoint yet; restarting it" in capsys.readouterr().out
    assert list(output.glob("*/v*")) == [run_dir]
    assert history(run_dir) == expected and not list(run_dir.glob(".*"))
    assert (run_dir / "checkpoint-2" / "adapter_model.safetensors").read_bytes() == finished

    # Other options make another run: auto never resumes a run whose numbers they would change.
    assert main([*argv, "--learning_rate", "0.02"]) == 0
    assert len(list(output.glob("*/v*"))) == 2
    assert (run_dir / "checkpoint-2" / "adapter_model.safetensors").read_bytes() == finished
