"""export: the base model is found from anywhere and must be the one trained on; the merged folder keeps the base's
dtype and the umask's file modes; a second export says it replaces the first; a run folder names its checkpoints."""

import json
import os
import shutil
from pathlib import Path

import pytest
from safetensors import safe_open

from mathtune.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model_dir, train_tiny_run) -> Path:
    """A two-step run of a bf16 copy of the tiny model, trained through the CLI with a relative --model."""
    import torch
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("export")
    base = root / "models" / "tiny-bf16"
    shutil.copytree(tiny_model_dir, base)
    AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16).save_pretrained(base)
    cwd = os.getcwd()
    os.chdir(root / "models")
    try:
        return train_tiny_run(root, Path("tiny-bf16"))
    finally:
        os.chdir(cwd)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_the_base_is_recorded_as_an_absolute_path_and_export_works_from_another_folder(run, tmp_path, monkeypatch):
    base = run.parents[2] / "models" / "tiny-bf16"
    assert json.loads((run / "args.json").read_text())["model"]["model_id_or_path"] == str(base.resolve())
    record = json.loads((run / "checkpoint-2" / "mathtune_base.json").read_text())
    assert record["path"] == str(base.resolve()) and len(record["fingerprint"]) == 16
    monkeypatch.chdir(tmp_path)  # 'tiny-bf16' means nothing here
    assert main(["export", "--ckpt_dir", str(run / "checkpoint-2"), "--merge_lora", "true",
                 "--output_dir", str(tmp_path / "merged")]) == 0


def test_export_onto_another_model_of_the_same_name_is_refused(run, tmp_path, tiny_model_dir, capsys):
    """The base folder replaced by another model (same name, same shapes, other weights): one line naming both."""
    import torch
    from transformers import AutoModelForCausalLM

    moved = tmp_path / "run"
    shutil.copytree(run, moved)
    impostor = tmp_path / "tiny-bf16"
    shutil.copytree(tiny_model_dir, impostor)
    model = AutoModelForCausalLM.from_pretrained(impostor, dtype=torch.bfloat16)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)
    model.save_pretrained(impostor)
    record = json.loads((moved / "checkpoint-2" / "mathtune_base.json").read_text())
    record["path"] = str(impostor)
    (moved / "checkpoint-2" / "mathtune_base.json").write_text(json.dumps(record))
    assert main(["export", "--ckpt_dir", str(moved / "checkpoint-2"), "--merge_lora", "true"]) == 2
    line = one_error_line(capsys)
    assert "was trained on base" in line and "has other weights" in line and str(impostor) in line
    assert not (moved / "checkpoint-2-merged").exists()


def test_a_bf16_base_merges_to_bf16_files_that_follow_the_umask(run, tmp_path, capsys):
    target = tmp_path / "merged"
    old = os.umask(0o022)
    try:
        assert main(["export", "--ckpt_dir", str(run / "checkpoint-2"), "--merge_lora", "true",
                     "--output_dir", str(target)]) == 0
    finally:
        os.umask(old)
    with safe_open(target / "model.safetensors", framework="pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
    modes = {p.name: p.stat().st_mode & 0o777 for p in target.iterdir()}
    assert modes["model.safetensors"] == 0o644 and set(modes.values()) == {0o644}, modes
    assert {p.stat().st_mode & 0o777 for p in (run / "checkpoint-2").iterdir()} == {0o644}


def test_a_second_export_says_it_replaces_the_first(run, tmp_path, capsys):
    argv = ["export", "--ckpt_dir", str(run / "checkpoint-2"), "--merge_lora", "true", "--output_dir",
            str(tmp_path / "merged")]
    assert main(argv) == 0
    assert "earlier export" not in capsys.readouterr().err
    assert main(argv) == 0
    assert f"'{tmp_path / 'merged'}' holds an earlier export; it is replaced" in capsys.readouterr().err


def test_a_run_folder_names_its_checkpoints(run, capsys):
    assert main(["export", "--ckpt_dir", str(run), "--merge_lora", "true"]) == 2
    line = one_error_line(capsys)
    assert "is a run folder, not a checkpoint; its checkpoints: checkpoint-1, checkpoint-2" in line
    assert f"the newest is '{run / 'checkpoint-2'}'" in line
    assert main(["infer", "--ckpt_dir", str(run), "--query", "hi"]) == 2
    assert "is a run folder, not a checkpoint" in one_error_line(capsys)
