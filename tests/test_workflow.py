"""The tutorial's workflow on a tiny model through the CLI: sft -> run dir -> export (infer: test_infer.py)."""

import json
import re

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
    monkeypatch.setattr(generate.Generator, "generate",
                        lambda self, conversations, *args, **kwargs: [["\\boxed{4}"]] * len(conversations))
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
