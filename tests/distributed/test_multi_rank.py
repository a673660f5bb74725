"""Several ranks on the CPU (gloo), launched by torchrun in a subprocess, against one process with the same global
batch: same loss history and weights (DDP, FSDP2 with LoRA and full fine-tuning), a two-"node" rendezvous on one host,
resume 2 -> 1 -> 2 ranks, a killed rank, and evaluation shared across ranks."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch has no torch.distributed")

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
ENV.pop("NPROC_PER_NODE", None)
if os.environ.get("MATHTUNE_DIST_TEST_CUDA") != "1":
    # gloo on the CPU; MATHTUNE_DIST_TEST_CUDA=1 runs the same tests with NCCL on a machine with 2+ GPUs (fp32
    # weights either way, so the tolerances below hold).
    ENV["CUDA_VISIBLE_DEVICES"] = ""
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
MATHTUNE = ["-m", "mathtune"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    # Rows of several lengths, so that the split across ranks is uneven and packing lays them out differently.
    rows = [{"query": f"What is {a} + {b}?" + " Think." * (a % 4),
             "response": f"{a} + {b} = {a + b}. The answer is \\boxed{{{a + b}}}." + " Done." * (b % 3)}
            for a in range(1, 9) for b in range(1, 6)]
    path = tmp_path_factory.mktemp("dist-data") / "math.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def sft_args(model_dir: Path, data: Path, output: Path, max_steps: int, *extra: str) -> list[str]:
    # Constant LR: a resumed run may then change --max_steps without changing the schedule.
    return ["sft", "--model", str(model_dir), "--dataset", str(data), "--output_dir", str(output),
            "--max_steps", str(max_steps), "--save_steps", "2", "--logging_steps", "1", "--eval_steps", "3",
            "--lora_dropout", "0", "--batch_size", "2", "--gradient_accumulation_steps", "3", "--learning_rate", "0.01",
            "--lr_scheduler_type", "constant", "--warmup_ratio", "0", "--max_length", "256", "--packing", "true",
            "--packing_length", "120", "--save_total_limit", "10", "--dtype", "fp32", *extra]


def run(cmd: list[str], timeout: int = 120, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, env=kw.pop("env", ENV), capture_output=True, text=True, timeout=timeout, **kw)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


def one_rank(args: list[str]) -> subprocess.CompletedProcess:
    return run([sys.executable, *MATHTUNE, *args])


def ranks(n: int, args: list[str]) -> subprocess.CompletedProcess:
    return run([*TORCHRUN, "--standalone", f"--nproc_per_node={n}", *MATHTUNE, *args])


def run_dir(output: Path) -> Path:
    (found,) = output.glob("*/v*")
    return found


def history(run: Path) -> tuple[list, list]:
    records = [json.loads(line) for line in (run / "logging.jsonl").read_text().splitlines()]
    return ([(r["step"], r["loss"]) for r in records if "loss" in r],
            [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r])


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    name = "adapter_model.safetensors" if (checkpoint / "adapter_model.safetensors").is_file() else "model.safetensors"
    return load_file(checkpoint / name)


def assert_same_run(mine: Path, reference: Path, step: int) -> None:
    (losses, evals), (ref_losses, ref_evals) = history(mine), history(reference)
    assert [s for s, _ in losses] == [s for s, _ in ref_losses] == list(range(1, step + 1))
    # A resumed segment also evaluates at its own last step: compare the steps both evaluated (all of the reference's).
    evals = [(s, v) for s, v in evals if s in dict(ref_evals)]
    assert [s for s, _ in evals] == [s for s, _ in ref_evals]
    for (_, a), (_, b) in zip(losses + evals, ref_losses + ref_evals, strict=True):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6)
    got, want = weights(mine / f"checkpoint-{step}"), weights(reference / f"checkpoint-{step}")
    assert got.keys() == want.keys()
    moved, start = 0.0, weights(reference / "checkpoint-2")
    for name, tensor in want.items():
        # On the norm, not every element: AdamW divides by the root of the second moment, so an element whose gradient
        # is ~0 moves by up to a whole lr step on a float-sum order (seen on full fine-tuning under FSDP: gate_proj).
        change = float((tensor - start[name]).norm())
        assert float((got[name] - tensor).norm()) <= 1e-2 * change + 1e-5, name
        moved = max(moved, float((tensor - start[name]).abs().max()))
    assert moved > 1e-3, "training did not move the weights: the comparison would prove nothing"
    # The optimizer state is one process's file whatever the number of ranks (FSDP's shards are gathered).
    got_opt = torch.load(mine / f"checkpoint-{step}" / "optimizer.pt", weights_only=True)
    want_opt = torch.load(reference / f"checkpoint-{step}" / "optimizer.pt", weights_only=True)
    assert got_opt["state"].keys() == want_opt["state"].keys()
    for index, state in want_opt["state"].items():
        torch.testing.assert_close(got_opt["state"][index]["exp_avg"], state["exp_avg"], rtol=1e-3, atol=1e-6)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model_dir, data) -> dict[str, Path]:
    """One-process runs of 6 steps, LoRA and full fine-tuning."""
    found = {}
    for kind in ("lora", "full"):
        out = tmp_path_factory.mktemp(f"ref-{kind}")
        one_rank(sft_args(tiny_model_dir, data, out, 6, "--sft_type", kind))
        found[kind] = run_dir(out)
    return found


@pytest.mark.parametrize(("kind", "fsdp"), [("lora", "false"), ("lora", "true"), ("full", "true")])
def test_two_ranks_give_the_one_rank_run(tmp_path, tiny_model_dir, data, reference, kind, fsdp):
    done = ranks(2, sft_args(tiny_model_dir, data, tmp_path, 6, "--sft_type", kind, "--fsdp", fsdp))
    run = run_dir(tmp_path)
    assert_same_run(run, reference[kind], 6)
    assert done.stdout.count("last checkpoint:") == 1, "only rank 0 prints"
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("checkpoint-")) == [
        "checkpoint-2", "checkpoint-4", "checkpoint-6"]
    assert not list(tmp_path.glob("**/.checkpoint-*")), "a staging folder was left behind"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_on_one_host_rendezvous_and_match(tmp_path, tiny_model_dir, data, reference):
    port = free_port()
    args = sft_args(tiny_model_dir, data, tmp_path, 6)
    nodes = [subprocess.Popen([*TORCHRUN, "--nnodes=2", f"--node_rank={rank}", "--nproc_per_node=1",
                               "--master_addr=127.0.0.1", f"--master_port={port}", *MATHTUNE, *args], env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    outputs = [node.communicate(timeout=120) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][1][-3000:] + outputs[1][1][-3000:]
    assert_same_run(run_dir(tmp_path), reference["lora"], 6)


def test_resume_two_ranks_on_one_and_back(tmp_path, tiny_model_dir, data, reference):
    """DDP on 2 ranks to step 2, one process to step 4, FSDP on 2 ranks (loading the one-process optimizer state into
    its shards) to step 6: the one-process run. (FSDP's gathered saves are checked by the 2-rank runs above.)"""
    ranks(2, sft_args(tiny_model_dir, data, tmp_path, 2, "--sft_type", "full"))
    run = run_dir(tmp_path)
    one_rank(sft_args(tiny_model_dir, data, tmp_path, 4, "--sft_type", "full",
                      "--resume_from_checkpoint", str(run / "checkpoint-2")))
    ranks(2, sft_args(tiny_model_dir, data, tmp_path, 6, "--sft_type", "full", "--fsdp", "true",
                      "--resume_from_checkpoint", str(run / "checkpoint-4")))
    assert_same_run(run, reference["full"], 6)


def descendants(pid: int) -> list[int]:
    found, queue = [], [pid]
    while queue:
        parent = queue.pop()
        for child in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
            found.append(int(child))
            queue.append(int(child))
    return found


def rank_of(pid: int) -> str | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    return next((v.split(b"=", 1)[1].decode() for v in environ if v.startswith(b"RANK=")), None)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the rank's process through /proc")
def test_killing_one_rank_stops_the_job_in_one_line_with_intact_checkpoints(tmp_path, tiny_model_dir, data):
    env = {**ENV, "NPROC_PER_NODE": "2"}
    args = sft_args(tiny_model_dir, data, tmp_path, 400)
    args[args.index("--save_steps") + 1] = "1"
    job = subprocess.Popen([sys.executable, *MATHTUNE, *args], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while not list(tmp_path.glob("*/v*/checkpoint-3")):
            assert job.poll() is None and time.monotonic() < deadline, "the job ended or never saved"
            time.sleep(0.2)
        victim = next(p for p in descendants(job.pid) if rank_of(p) == "1")
        os.kill(victim, signal.SIGKILL)
        out, err = job.communicate(timeout=90)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode != 0
    ours = [line for line in err.splitlines() if line.startswith("mathtune sft:")]
    # One line: rank 0's (it names the last checkpoint) or, where rank 0 was stopped before it could say it, the
    # launcher's (naming the killed rank).
    assert len(ours) == 1, err[-3000:]
    assert ours[0] == "mathtune sft: rank 1 was killed by signal 9; the job stopped" or (
        "rank 0 lost another rank" in ours[0] and "last complete checkpoint:" in ours[0] and "/checkpoint-" in ours[0])
    assert "Traceback" not in err
    run = run_dir(tmp_path)
    saved = [p for p in run.iterdir() if p.name.startswith("checkpoint-")]
    assert saved and all((p / "trainer_state.json").is_file() for p in saved)
    last = max(saved, key=lambda p: int(p.name.split("-")[1]))
    step = int(last.name.split("-")[1])
    assert step < 400
    # The last checkpoint is whole: one process resumes from it and finishes two more steps.
    resumed = sft_args(tiny_model_dir, data, tmp_path, step + 2, "--resume_from_checkpoint", str(last))
    one_rank(resumed)
    assert (run / f"checkpoint-{step + 2}" / "adapter_model.safetensors").is_file()


def test_eval_shared_across_ranks_gives_the_one_process_predictions(tmp_path, tiny_model_dir):
    args = ["eval", "--model", str(tiny_model_dir), "--benchmarks", "rg:arithmetic", "--limit", "5",
            "--max_new_tokens", "6"]
    one_rank([*args, "--output_dir", str(tmp_path / "one")])
    done = run([*TORCHRUN, "--standalone", "--nproc_per_node=2", *MATHTUNE, *args, "--output_dir",
                str(tmp_path / "two")])
    assert done.stdout.count("rg:arithmetic") >= 1
    (one,) = (tmp_path / "one").glob("*/predictions.jsonl")
    (two,) = (tmp_path / "two").glob("*/predictions.jsonl")
    records = [[json.loads(line) for line in path.read_text().splitlines()] for path in (one, two)]
    assert len(records[0]) == 5
    for key in ("question", "outputs", "verdicts"):
        assert [r[key] for r in records[1]] == [r[key] for r in records[0]], key


def test_ctrl_c_stops_every_rank_after_one_step_with_a_checkpoint_that_resumes(tmp_path, tiny_model_dir, data):
    """Ctrl-C in a terminal reaches the launcher and every rank at once (the process group); torchrun passes it on
    again: each rank must count it once, agree on the step, save, and the job end with exit 130."""
    env = {**ENV, "NPROC_PER_NODE": "2"}
    args = sft_args(tiny_model_dir, data, tmp_path, 400)
    job = subprocess.Popen([sys.executable, *MATHTUNE, *args], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not list(tmp_path.glob("*/v*/checkpoint-2")):
            assert job.poll() is None and time.monotonic() < deadline, "the job ended or never saved"
            time.sleep(0.2)
        os.killpg(job.pid, signal.SIGINT)
        out, err = job.communicate(timeout=90)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode == 130, err[-3000:]
    assert out.count("Stopped at step") == 1, out[-2000:] + err[-2000:]
    assert "Traceback" not in err
    stopped = int(out.split("Stopped at step ")[1].split(";")[0])
    run = run_dir(tmp_path)
    assert (run / f"checkpoint-{stopped}" / "trainer_state.json").is_file()
    one_rank(sft_args(tiny_model_dir, data, tmp_path, stopped + 1, "--resume_from_checkpoint",
                      str(run / f"checkpoint-{stopped}")))
    assert (run / f"checkpoint-{stopped + 1}" / "adapter_model.safetensors").is_file()


def test_bad_input_on_every_rank_is_one_line_and_exit_2(tmp_path, tiny_model_dir):
    env = {**ENV, "NPROC_PER_NODE": "2"}
    missing = tmp_path / "missing.jsonl"
    done = subprocess.run([sys.executable, *MATHTUNE, "sft", "--model", str(tiny_model_dir), "--dataset", str(missing),
                           "--output_dir", str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    ours = [line for line in done.stderr.splitlines() if line.startswith("mathtune")]
    assert len(ours) == 1 and "missing.jsonl" in ours[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_eval_benchmarks_before_and_after_training_on_two_ranks(tmp_path, tiny_model_dir, data):
    done = ranks(2, sft_args(tiny_model_dir, data, tmp_path, 2, "--eval_benchmarks", "rg:arithmetic",
                             "--eval_limit", "4"))
    run = run_dir(tmp_path)
    for when in ("before", "after"):
        summary = json.loads((run / "eval" / when / "summary.json").read_text())
        assert summary["benchmarks"]["rg:arithmetic"]["n"] == 4, summary
        (predictions,) = (run / "eval" / when).glob("*/predictions.jsonl")
        assert len(predictions.read_text().splitlines()) == 4
    assert done.stdout.count("last checkpoint:") == 1
