"""Adapters are checked as resume checks them before export, infer or eval trust them; ranks that cannot fit are
refused before anything is allocated."""

import json
import shutil
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from mathtune.cli import main


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tiny_model_dir, train_tiny_run) -> Path:
    return train_tiny_run(tmp_path_factory.mktemp("model"), tiny_model_dir) / "checkpoint-2"


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def altered(ckpt: Path, tmp_path: Path, config=None, weights=None) -> Path:
    """A copy of `ckpt` (in a copy of its run, so its base is found) with its adapter config or weights changed."""
    run = Path(shutil.copytree(ckpt.parent, tmp_path / "run"))
    folder = run / ckpt.name
    if config is not None:
        cfg = json.loads((folder / "adapter_config.json").read_text())
        config(cfg)
        (folder / "adapter_config.json").write_text(json.dumps(cfg))
    if weights is not None:
        save_file(weights(load_file(folder / "adapter_model.safetensors")), folder / "adapter_model.safetensors")
    return folder


def verbs(folder: Path, tmp_path: Path) -> list[list[str]]:
    return [["export", "--ckpt_dir", str(folder), "--merge_lora", "true"],
            ["infer", "--ckpt_dir", str(folder), "--query", "What is 1 + 1?", "--max_new_tokens", "2"],
            ["eval", "--model", str(folder), "--benchmarks", "rg:arithmetic", "--limit", "1", "--max_new_tokens", "2",
             "--output_dir", str(tmp_path / "eval")]]


CASES = [
    ("no target_modules", lambda c: c.pop("target_modules"), None, "target_modules is missing or empty"),
    ("rank 1e6", lambda c: c.update(r=1_000_000), None, "rank r=1,000,000 is beyond the base model's hidden size 64"),
    ("layer_replication", lambda c: c.update(layer_replication=[[0, 1]]), None, "layer_replication is not supported"),
    ("1 of 28 tensors", None, lambda w: dict([sorted(w.items())[0]]), "it holds 1 tensors, the config implies 28"),
]


@pytest.mark.parametrize("config, weights, needle", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_misfit_adapter_is_one_line_for_every_verb(ckpt, tmp_path, capsys, config, weights, needle):
    folder = altered(ckpt, tmp_path, config, weights)
    for argv in verbs(folder, tmp_path):
        start = time.perf_counter()
        assert main(argv) == 2, argv
        line = one_error_line(capsys)
        assert needle in line and line.startswith(f"mathtune {argv[0]}"), line
        assert time.perf_counter() - start < 30
    assert not (folder.parent / "checkpoint-2-merged").exists()
    assert not (tmp_path / "eval" / "summary.json").exists()


def test_a_fitting_adapter_still_loads_with_every_tensor(ckpt):
    from mathtune.model import load_for_inference

    model, _, description = load_for_inference(str(ckpt), dtype="fp32", device="cpu")
    assert description.endswith(str(ckpt))
    trained = load_file(ckpt / "adapter_model.safetensors")
    loaded = {k: v for k, v in model.state_dict().items() if "lora_" in k}
    assert len(loaded) == len(trained) == 28
    for key, value in trained.items():
        assert (loaded[key.replace(".weight", ".default.weight")] == value).all()


def test_a_lora_rank_beyond_the_hidden_size_is_refused_before_allocating(tiny_model_dir, math_jsonl, tmp_path,
                                                                          capsys):
    start = time.perf_counter()
    assert main(["sft", "--model", str(tiny_model_dir), "--dataset", str(math_jsonl), "--output_dir",
                 str(tmp_path / "out"), "--lora_rank", "100000", "--max_steps", "1"]) == 2
    assert time.perf_counter() - start < 30
    assert "--lora_rank 100000: must be between 1 and the model's hidden size 64" in one_error_line(capsys)
    assert not list((tmp_path / "out").glob("*/v*"))
