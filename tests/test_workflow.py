"""The tutorial's workflow on a tiny model through the CLI: sft -> run dir -> export -> infer, and bad input."""

import json
import os
import re
import select
import subprocess
import sys
import time

import pytest
import torch

from mathtune.cli import main

SFT = ["sft", "--sft_type", "lora", "--num_train_epochs", "1", "--max_length", "1024", "--dtype", "AUTO",
       "--batch_size", "2", "--gradient_accumulation_steps", "2", "--logging_steps", "1", "--save_steps", "4",
       "--eval_steps", "4", "--learning_rate", "0.05", "--lora_dropout", "0"]


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("workflow")
    rows = [{"query": f"What is {a} + {b}?", "response": f"{a} + {b} = {a + b}."}
            for a in range(1, 9) for b in range(5)]
    data = root / "math.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code = main([*SFT, "--model_id_or_path", str(tiny_model_dir), "--dataset", f"{data}#32",
                 "--output_dir", str(root / "output")])
    assert code == 0
    (run_dir,) = (root / "output" / "tiny-llama").iterdir()
    return run_dir


def test_sft_warns_when_training_rows_overlap_its_eval_benchmarks(tmp_path, tiny_model_dir, capsys, monkeypatch):
    from mathtune import generate
    from mathtune.evaluate.benchmarks import get_benchmark

    question = get_benchmark("rg:arithmetic").load(limit=1)[0].question
    rows = [{"query": question, "response": "4"}]
    rows += [{"query": f"Name colour {i}.", "response": "blue"} for i in range(7)]
    data = tmp_path / "leaky.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # Answers are faked: the warning comes before any, and a random model's real ones take half a minute here.
    monkeypatch.setattr(generate, "generate",
                        lambda model, tokenizer, conversations, **kwargs: [["\\boxed{4}"]] * len(conversations))
    assert main(["sft", "--model", str(tiny_model_dir), "--dataset", str(data), "--split_dataset_ratio", "0",
                 "--output_dir", str(tmp_path / "output"), "--max_steps", "1", "--batch_size", "4",
                 "--gradient_accumulation_steps", "1", "--max_length", "128",
                 "--eval_benchmarks", "rg:arithmetic", "rg:syllogism", "--eval_limit", "1"]) == 0
    warnings = re.findall(r"warning: [^\r\n]*", capsys.readouterr().err)
    # One line for the benchmark a training row comes from, none for the other; and training went on.
    assert warnings == ["warning: 1 training rows overlap rg:arithmetic (1 exact, 0 sharing a 13-gram); "
                        "see `mathtune data check`"]
    (run_dir,) = (tmp_path / "output" / "tiny-llama").iterdir()
    assert (run_dir / "checkpoint-1").is_dir() and (run_dir / "eval" / "after" / "summary.json").is_file()


def test_run_dir_holds_every_promised_file(lora_run):
    assert lora_run.name.startswith("v0-")
    args = json.loads((lora_run / "args.json").read_text())
    assert args["lora"]["sft_type"] == "lora" and args["data"]["max_length"] == 1024
    records = [json.loads(line) for line in (lora_run / "logging.jsonl").read_text().splitlines()]
    train_records = [r for r in records if "loss" in r]
    assert [r["step"] for r in train_records] == list(range(1, len(train_records) + 1))
    for key in ("step", "epoch", "loss", "grad_norm", "learning_rate", "tokens_per_s", "memory_gib"):
        assert key in train_records[0]
    assert any("eval_loss" in r for r in records)
    assert (lora_run / "images" / "train_loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((lora_run / "data_mix.json").read_text())
    checkpoints = sorted(lora_run.glob("checkpoint-*"))
    assert checkpoints
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer_config.json", "trainer_state.json",
                 "optimizer.pt", "scheduler.pt", "rng_state.pt"):
        assert (checkpoints[-1] / name).is_file(), name


def test_plot_redraws_the_curve(lora_run):
    png = lora_run / "images" / "train_loss.png"
    png.unlink()
    assert main(["plot", str(lora_run)]) == 0
    assert png.is_file()


def test_smoothed_curve_follows_a_short_falling_loss():
    from mathtune.plot import smooth

    losses = [1.2 * 0.9**k for k in range(37)]  # a run logged 37 times, the loss falling fast then flat
    smoothed = smooth(losses)
    assert smoothed[0] == losses[0]
    assert smoothed[-1] - losses[-1] < 0.05 * (losses[0] - losses[-1])  # a fixed 0.9 ends 6.4% above
    long = [1.0] * 100 + [0.0] * 400
    assert smooth(long)[105] > 0.4  # long runs keep TensorBoard's 0.9: ten points of memory


def test_export_merges_with_identical_logits_and_loads_with_plain_transformers(lora_run, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    checkpoint = sorted(lora_run.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))[-1]
    assert main(["export", "--ckpt_dir", str(checkpoint), "--merge_lora", "true"]) == 0
    merged_dir = checkpoint.with_name(checkpoint.name + "-merged")
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    eos = merged.generation_config.eos_token_id
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in (eos if isinstance(eos, list) else [eos])
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    ids = tokenizer("What is 2 + 3?", return_tensors="pt").input_ids
    with torch.no_grad():
        base_logits = base(ids).logits
        adapter_logits = PeftModel.from_pretrained(base, checkpoint).eval()(ids).logits
        merged_logits = merged(ids).logits
    assert not torch.allclose(adapter_logits, base_logits, atol=1e-3)  # the adapter learned something
    torch.testing.assert_close(merged_logits, adapter_logits, rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def parrot_dir(tmp_path_factory, tiny_model_dir):
    """The tiny model fully fine-tuned to give two fixed replies, so stopping behaviour is observable."""
    from mathtune.config import TrainArgs
    from mathtune.data.tokenize import encode_conversation
    from mathtune.model import load_model, load_tokenizer
    from mathtune.train import train

    tokenizer = load_tokenizer(tiny_model_dir)
    model = load_model(tiny_model_dir, "fp32", "cpu")
    pairs = [("What is 2 + 3?", "5"), ("Hello!", "Hello! Observation: done")]
    data = [encode_conversation(tokenizer, [{"role": "user", "content": q}, {"role": "assistant", "content": r}])
            for q, r in pairs] * 4
    root = tmp_path_factory.mktemp("parrot")
    (root / "run").mkdir()
    train(model, tokenizer, data, [], TrainArgs(learning_rate=3e-3, batch_size=8, gradient_accumulation_steps=1,
                                                max_steps=60, warmup_ratio=0, save_steps=1000, logging_steps=10,
                                                lr_scheduler_type="constant", weight_decay=0.0),
          max_length=256, run_dir=root / "run", progress=False)
    model.save_pretrained(root / "parrot")
    tokenizer.save_pretrained(root / "parrot")
    return root / "parrot"


def test_infer_query_stops_at_end_of_turn(parrot_dir, capsys):
    assert main(["infer", "--ckpt_dir", str(parrot_dir), "--query", "What is 2 + 3?", "--max_new_tokens", "40"]) == 0
    assert capsys.readouterr().out == "5\n"


def test_infer_stops_at_stop_word(parrot_dir, capsys):
    assert main(["infer", "--ckpt_dir", str(parrot_dir), "--query", "Hello!", "--stop_words", "Observation:",
                 "--infer_backend", "pt"]) == 0
    assert capsys.readouterr().out == "Hello! Observation:\n"


@pytest.mark.parametrize("extra", [[], ["--static_cache", "--batch_size", "1"]])
def test_infer_batch_file(parrot_dir, tmp_path, extra):
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"query": "What is 2 + 3?"}) + "\n" + json.dumps(
        {"messages": [{"role": "user", "content": "Hello!"}]}) + "\n")
    target = tmp_path / "out.jsonl"
    assert main(["infer", "--ckpt_dir", str(parrot_dir), "--input", str(source), "--output", str(target),
                 "--stop_words", "Observation:", *extra]) == 0
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert [r["response"] for r in rows] == ["5", "Hello! Observation:"]


def _read_until(fd: int, needle: bytes, timeout: float = 60) -> bytes:
    seen = b""
    deadline = time.time() + timeout
    while needle not in seen:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.time()))
        if not ready:
            raise AssertionError(f"timed out waiting for {needle!r}; got {seen!r}")
        seen += os.read(fd, 4096)
    return seen


def test_repl_through_a_pseudo_terminal(parrot_dir):
    master, slave = os.openpty()
    process = subprocess.Popen([sys.executable, "-m", "mathtune.cli", "infer", "--ckpt_dir", str(parrot_dir)],
                               stdin=slave, stdout=slave, stderr=subprocess.DEVNULL, close_fds=True)
    os.close(slave)
    try:
        _read_until(master, b"<<< ")
        os.write(master, b"What is 2 + 3?\n")
        assert b"5\r\n" in _read_until(master, b"<<< ")
        os.write(master, b"/clear\n")
        assert b"history cleared" in _read_until(master, b"<<< ")
        os.write(master, b"/exit\n")
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
        os.close(master)
