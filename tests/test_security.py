"""Loading only what is safe: planted pickles in a checkpoint, a model or an adapter folder are refused in one line
without being unpickled, and a model's own Python code never runs unless asked for. Each payload below is shown to
be live: loaded the unsafe way, it creates its marker file."""

import json
import os
import re
import shlex
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mathtune.cli import main

SRC = Path(__file__).resolve().parents[1] / "src" / "mathtune"


class Payload:
    """Unpickling this runs a shell command that creates `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def plant(path: Path, marker: Path, state=None) -> None:
    torch.save({"state": state if state is not None else {}, "payload": Payload(marker)}, path)


def assert_live(path: Path, marker: Path) -> None:
    """The planted file would have run code had it been unpickled without weights_only."""
    assert not marker.exists()
    torch.load(path, weights_only=False)
    assert marker.exists()


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model_dir, train_tiny_run) -> Path:
    """A two-step run of the tiny model with a checkpoint per step."""
    return train_tiny_run(tmp_path_factory.mktemp("security"), tiny_model_dir)


@pytest.mark.parametrize("name", ["optimizer.pt", "scheduler.pt", "rng_state.pt"])
def test_resume_refuses_a_planted_pickle_and_touches_nothing(run, tmp_path, tiny_model_dir, name, capsys):
    output = tmp_path / "output" / "tiny-llama"
    output.mkdir(parents=True)
    run_dir = Path(shutil.copytree(run, output / run.name))
    data = json.loads((run_dir / "args.json").read_text())["data"]["dataset"][0]
    target, marker = run_dir / "checkpoint-2" / name, tmp_path / "pwned"
    plant(target, marker, torch.load(target, weights_only=True))
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}

    code = main(["sft", "--model", str(tiny_model_dir), "--dataset", data, "--output_dir", str(tmp_path / "output"),
                 "--max_steps", "2", "--save_steps", "1", "--batch_size", "4", "--gradient_accumulation_steps", "1",
                 "--max_length", "128", "--resume_from_checkpoint", "auto"])
    assert code == 2
    line = one_error_line(capsys)
    assert line.startswith(f"mathtune sft: error: refusing '{target}': it holds Python objects")
    assert not marker.exists()
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before  # nothing rewritten
    assert_live(target, marker)


def test_model_with_only_pickled_weights_is_refused(tiny_model_dir, tmp_path, capsys):
    model_dir = Path(shutil.copytree(tiny_model_dir, tmp_path / "pickled"))
    weights = load_file(model_dir / "model.safetensors")
    (model_dir / "model.safetensors").unlink()
    marker = tmp_path / "pwned"
    plant(model_dir / "pytorch_model.bin", marker, weights)
    output = tmp_path / "output"
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"query": "q", "response": "r"}) + "\n")
    for argv in (["infer", "--ckpt_dir", str(model_dir), "--query", "hi"],
                 ["sft", "--model", str(model_dir), "--dataset", str(data), "--output_dir", str(output)]):
        assert main(argv) == 2
        assert "holds weights only as pickle (pytorch_model.bin)" in one_error_line(capsys)
    assert not marker.exists() and not output.exists()
    assert_live(model_dir / "pytorch_model.bin", marker)


def test_safetensors_are_preferred_over_a_planted_pickle_next_to_them(tiny_model_dir, tmp_path, capsys):
    model_dir = Path(shutil.copytree(tiny_model_dir, tmp_path / "both"))
    marker = tmp_path / "pwned"
    plant(model_dir / "pytorch_model.bin", marker)
    assert main(["infer", "--ckpt_dir", str(model_dir), "--query", "hi", "--max_new_tokens", "2"]) == 0
    assert not marker.exists()


def test_adapter_with_only_a_pickled_weights_file_is_refused(run, tiny_model_dir, tmp_path, capsys):
    adapter = Path(shutil.copytree(run / "checkpoint-2", tmp_path / "adapter"))
    weights = load_file(adapter / "adapter_model.safetensors")
    (adapter / "adapter_model.safetensors").unlink()
    marker = tmp_path / "pwned"
    plant(adapter / "adapter_model.bin", marker, weights)
    assert main(["infer", "--ckpt_dir", str(tiny_model_dir), "--adapter", str(adapter), "--query", "hi"]) == 2
    assert "adapter folder" in one_error_line(capsys)
    assert main(["export", "--ckpt_dir", str(adapter)]) == 2
    assert "holds weights only as pickle (adapter_model.bin)" in one_error_line(capsys)
    assert not marker.exists()
    assert_live(adapter / "adapter_model.bin", marker)


def test_a_models_own_code_runs_only_with_trust_remote_code(run, tiny_model_dir, tmp_path, capsys):
    model_dir = Path(shutil.copytree(tiny_model_dir, tmp_path / "custom"))
    marker = tmp_path / "pwned"
    code = f"import pathlib\npathlib.Path({str(marker)!r}).touch()\nfrom transformers import LlamaConfig as Base\n"
    (model_dir / "configuration_custom.py").write_text(code + "class CustomConfig(Base):\n    model_type = 'custom'\n")
    (model_dir / "modeling_custom.py").write_text(code.replace("LlamaConfig", "LlamaForCausalLM") +
                                                 "from .configuration_custom import CustomConfig\n"
                                                 "class Custom(Base):\n    config_class = CustomConfig\n")
    config = json.loads((model_dir / "config.json").read_text())
    config.update(model_type="custom", auto_map={"AutoConfig": "configuration_custom.CustomConfig",
                                                 "AutoModelForCausalLM": "modeling_custom.Custom"})
    (model_dir / "config.json").write_text(json.dumps(config))
    adapter_run = tmp_path / "run" / "v0-20260101-000000"  # an adapter trained on the custom model
    adapter = Path(shutil.copytree(run / "checkpoint-2", adapter_run / "checkpoint-2"))
    record = json.loads((adapter / "mathtune_base.json").read_text())
    (adapter / "mathtune_base.json").write_text(json.dumps({**record, "path": str(model_dir), "fingerprint": None}))
    args = json.loads((run / "args.json").read_text())
    args["model"]["model_id_or_path"] = str(model_dir)
    (adapter_run / "args.json").write_text(json.dumps(args))

    infer = ["infer", "--ckpt_dir", str(model_dir), "--query", "hi", "--max_new_tokens", "2"]
    evaluate = ["eval", "--model", str(model_dir), "--benchmarks", "rg:arithmetic", "--limit", "1",
                "--max_new_tokens", "2", "--output_dir", str(tmp_path / "eval")]
    export = ["export", "--ckpt_dir", str(adapter), "--output_dir", str(tmp_path / "merged")]
    for argv in (infer, evaluate, export):
        assert main(argv) == 2
        assert "--trust_remote_code true" in one_error_line(capsys)
        assert not marker.exists()
    # Asked for, every verb that loads a model runs its code.
    for argv in (infer, evaluate, export):
        assert main([*argv, "--trust_remote_code", "true"]) == 0, argv
        assert marker.exists()
    assert (tmp_path / "eval" / "summary.json").is_file() and (tmp_path / "merged" / "config.json").is_file()


def test_the_package_unpickles_only_with_weights_only_and_trusts_no_code_by_default():
    source = {p: p.read_text() for p in SRC.rglob("*.py")}
    loads = [(p.name, call) for p, text in source.items() for call in re.findall(r"torch\.load\([^)]*\)", text)]
    assert loads and all("weights_only=True" in call for _, call in loads), loads
    assert not [p for p, text in source.items() if re.search(r"\bpickle\.loads?\(|trust_remote_code=True", text)]


# -- chat templates, config files and hub names: bounded, one line ---------------------------------------------------

NESTED_LOOP = ("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"
               "{{ messages[0]['content'] }}")
HUGE_STRING = "{{ 'x' * 20000000 }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
BLOCKED_READ = "{{ messages.__class__.__mro__[1].__subclasses__() }}"


def with_template(tiny_model_dir: Path, tmp_path: Path, template: str) -> Path:
    folder = Path(shutil.copytree(tiny_model_dir, tmp_path / "templated"))
    (folder / "chat_template.jinja").write_text(template)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("template, needle", [(NESTED_LOOP, "did not finish within 5 s"),
                                              (HUGE_STRING, "rendered 20,000,"),
                                              (BLOCKED_READ, "SecurityError")], ids=["loop", "huge", "blocked"])
def test_a_hostile_chat_template_is_one_line_in_bounded_time(tiny_model_dir, tmp_path, capsys, template, needle,
                                                             math_jsonl):
    import time

    from transformers import AutoTokenizer

    folder = with_template(tiny_model_dir, tmp_path, template)
    assert AutoTokenizer.from_pretrained(folder).chat_template == template
    for argv in (["infer", "--ckpt_dir", str(folder), "--query", "hi", "--max_new_tokens", "2"],
                 ["sft", "--model", str(folder), "--dataset", str(math_jsonl), "--output_dir", str(tmp_path / "o")]):
        start = time.perf_counter()
        assert main(argv) == 2
        err = [x for x in capsys.readouterr().err.splitlines() if not x.startswith("model: ")]  # infer's banner
        assert len(err) == 1 and needle in err[0] and err[0].startswith(f"mathtune {argv[0]}"), err
        assert time.perf_counter() - start < 60
    assert not (tmp_path / "o").exists()


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path, capsys):
    import time

    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    (tmp_path / "bomb.yaml").write_text("\n".join(lines) + "\nlearning_rate: *a8\n")
    start = time.perf_counter()
    assert main(["sft", "--config", str(tmp_path / "bomb.yaml"), "--dataset", "x.jsonl"]) == 2
    assert time.perf_counter() - start < 5
    assert "aliases (*name) are not supported in a config" in one_error_line(capsys)


@pytest.mark.parametrize("name", ["HF::../dir", "HF::./dir", "HF::dir", "MS::../dir", "HF::org/.."])
def test_a_hub_name_must_be_org_slash_name(tmp_path, capsys, monkeypatch, name):
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "train.jsonl").write_text(json.dumps({"query": "q", "response": "r"}) + "\n")
    monkeypatch.chdir(tmp_path / "dir")
    assert main(["data", "preview", name]) == 2
    line = one_error_line(capsys)
    assert f"dataset '{name}': expected {name[:4]}org/name" in line, line
