"""Safe writes: a checkpoint, a merged export or an answers file is complete or absent, whatever happens while it is
written (kill, full disk, permission denied); pruning never takes the newest checkpoint; no NaN reaches a checkpoint."""

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mathtune.atomic import write_failure
from mathtune.cli import main
from mathtune.errors import UserError
from mathtune.run_dir import STATE_FILE, find_resume_checkpoint, latest_checkpoint, newest_run, save_checkpoint


def writer(step: int, seen: list | None = None):
    def write(folder: Path) -> None:
        if seen is not None:  # what is on disk while this checkpoint is being written
            seen.append(sorted(p.name for p in folder.parent.iterdir()))
        (folder / "weights.bin").write_text(f"step {step}")
        (folder / STATE_FILE).write_text(json.dumps({"global_step": step}))

    return write


def names(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.iterdir())


def test_save_total_limit_keeps_the_newest_and_prunes_only_after_the_new_one_is_complete(tmp_path):
    seen: list = []
    for step in range(1, 6):
        save_checkpoint(tmp_path, step, writer(step, seen), save_total_limit=2)
    assert names(tmp_path) == ["checkpoint-4", "checkpoint-5"]
    # While checkpoint-N was staged, both earlier complete checkpoints were still there.
    assert seen[4] == [".checkpoint-5.partial", "checkpoint-3", "checkpoint-4"]
    assert (tmp_path / "checkpoint-5" / "weights.bin").read_text() == "step 5"
    # A limit of 1 keeps the newest complete checkpoint even when the one just written is older.
    save_checkpoint(tmp_path, 9, writer(9), save_total_limit=None)
    save_checkpoint(tmp_path, 6, writer(6), save_total_limit=1)
    assert names(tmp_path) == ["checkpoint-6", "checkpoint-9"]


def test_a_save_cut_short_is_ignored_by_resume_and_cleaned_by_the_next_save(tmp_path):
    run_dir = tmp_path / "output" / "tiny" / "v0-20261201-000000"
    run_dir.mkdir(parents=True)
    save_checkpoint(run_dir, 2, writer(2), save_total_limit=None)
    # A kill just before the rename: the staging folder is complete, state file included, but not in place.
    staged = run_dir / ".checkpoint-3.partial"
    shutil.copytree(run_dir / "checkpoint-2", staged)
    (staged / "junk").write_text("from the killed run")
    (run_dir / ".checkpoint-7.partial").mkdir()  # a kill while saving a step that is never saved again
    (run_dir / ".checkpoint-1.deleting").mkdir()  # a kill while pruning
    (run_dir / "checkpoint-4").mkdir()  # copied by hand, incomplete: no trainer_state.json
    assert latest_checkpoint(run_dir) == run_dir / "checkpoint-2"
    assert latest_checkpoint(newest_run(tmp_path / "output", "tiny")) == run_dir / "checkpoint-2"
    with pytest.raises(UserError, match="not a complete checkpoint"):
        find_resume_checkpoint(str(staged))

    save_checkpoint(run_dir, 3, writer(3), save_total_limit=None)
    assert names(run_dir) == ["checkpoint-2", "checkpoint-3", "checkpoint-4"]
    assert names(run_dir / "checkpoint-3") == [STATE_FILE, "weights.bin"]
    assert (run_dir / "checkpoint-3" / "weights.bin").read_text() == "step 3"
    assert latest_checkpoint(newest_run(tmp_path / "output", "tiny")) == run_dir / "checkpoint-3"


def _enospc():
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _torch_style():
    """What torch.save raises on a full disk: its own RuntimeError, the OSError only as context."""
    try:
        raise _enospc()
    except OSError:
        try:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534") from None
        except RuntimeError as exc:
            exc.__suppress_context__ = False
            return exc


def _safetensors_style():
    from safetensors import SafetensorError

    return SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


@pytest.mark.parametrize("failure, reason", [
    (_enospc, "No space left on device"),
    (lambda: PermissionError(errno.EACCES, os.strerror(errno.EACCES)), "Permission denied"),
    (_torch_style, "No space left on device"),
    (_safetensors_style, "No space left on device"),
], ids=["ENOSPC", "EACCES", "torch", "safetensors"])
def test_a_failed_write_leaves_the_earlier_checkpoints_and_no_staging(tmp_path, failure, reason):
    for step in (1, 2):
        save_checkpoint(tmp_path, step, writer(step), save_total_limit=2)

    def write(folder: Path) -> None:
        (folder / "weights.bin").write_text("half")
        raise failure()

    with pytest.raises(UserError, match=f"checkpoint-3.*{reason}.*earlier checkpoints are intact"):
        save_checkpoint(tmp_path, 3, write, save_total_limit=2)
    assert names(tmp_path) == ["checkpoint-1", "checkpoint-2"]
    assert (tmp_path / "checkpoint-2" / "weights.bin").read_text() == "step 2"


def test_a_bug_while_saving_is_not_reported_as_a_disk_problem(tmp_path):
    def write(folder: Path) -> None:
        raise TypeError("a bug")

    with pytest.raises(TypeError):
        save_checkpoint(tmp_path, 1, write, save_total_limit=2)
    assert names(tmp_path) == []


def test_torch_state_files_keep_the_reason_of_a_failed_write(tmp_path, monkeypatch):
    import io

    from mathtune import run_dir as run_dir_module

    class FullDisk(io.RawIOBase):
        """A file on a disk with 4 KiB free."""

        room = 4096

        def writable(self):
            return True

        def write(self, data):
            if len(data) > self.room:
                raise _enospc()
            self.room -= len(data)
            return len(data)

    monkeypatch.setattr(run_dir_module, "open", lambda path, mode: FullDisk(), raising=False)
    with pytest.raises(RuntimeError) as caught:  # torch's own error, the OSError only as its context
        run_dir_module._save_torch({"exp_avg": torch.zeros(100_000)}, tmp_path / "optimizer.pt")
    assert write_failure(caught.value) == "No space left on device"


# -- through the whole program ---------------------------------------------------------------------------------------

def sft(model_dir, data, output, *extra):
    return ["sft", "--model", str(model_dir), "--dataset", str(data), "--output_dir", str(output), "--max_steps", "4",
            "--save_steps", "1", "--logging_steps", "1", "--batch_size", "4", "--gradient_accumulation_steps", "1",
            "--max_length", "256", *extra]


def test_disk_full_mid_training_exits_2_in_one_line_and_the_run_resumes(tmp_path, tiny_model_dir, math_jsonl,
                                                                        monkeypatch, capsys):
    real_save, calls = torch.save, {"n": 0}

    def fills_up(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:  # optimizer.pt of the third checkpoint (three state files per checkpoint)
            raise _enospc()
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", fills_up)
    output = tmp_path / "output"
    assert main(sft(tiny_model_dir, math_jsonl, output)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if "error" in line]
    assert errors == [err[-1]] and not any("Traceback" in line for line in err)
    assert err[-1].startswith("mathtune sft: error: cannot save checkpoint to ")
    assert err[-1].endswith("checkpoint-3': No space left on device; earlier checkpoints are intact")
    (run_dir,) = output.glob("*/v*")
    assert [p.name for p in sorted(run_dir.glob("checkpoint-*"))] == ["checkpoint-1", "checkpoint-2"]
    assert not list(run_dir.glob(".*"))
    torch.load(run_dir / "checkpoint-2" / "optimizer.pt", weights_only=True)
    assert load_file(run_dir / "checkpoint-2" / "adapter_model.safetensors")

    monkeypatch.setattr(torch, "save", real_save)
    assert main(sft(tiny_model_dir, math_jsonl, output, "--resume_from_checkpoint", "auto")) == 0
    steps = [json.loads(line)["step"] for line in (run_dir / "logging.jsonl").read_text().splitlines()]
    assert [s for s in steps if s] == [1, 2, 3, 4, 4]  # four loss lines, then the final eval line
    assert latest_checkpoint(run_dir).name == "checkpoint-4"


# -- no NaN in a checkpoint ------------------------------------------------------------------------------------------

class NanGradient(torch.autograd.Function):
    """Identity forward; NaN gradient backward: a finite loss whose gradients are not."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


def tiny_training(tiny_model_dir, tiny_tokenizer):
    from mathtune.data.tokenize import encode_conversation
    from mathtune.model import attach_lora, load_model

    torch.manual_seed(0)
    model = attach_lora(load_model(tiny_model_dir, "fp32", "cpu"), 8, 16, 0.0, "all-linear")
    data = [encode_conversation(tiny_tokenizer, [{"role": "user", "content": f"What is {a} + 1?"},
                                                 {"role": "assistant", "content": f"{a + 1}."}]) for a in range(8)]
    args = dict(learning_rate=1e-2, batch_size=4, gradient_accumulation_steps=1, max_steps=3, logging_steps=1,
                save_steps=1, eval_steps=100, save_total_limit=None, nan_policy="skip", warmup_ratio=0.0,
                max_length=128)
    return model, data, args


@pytest.mark.parametrize("poison", ["loss", "gradient"])
def test_checkpoint_after_a_skipped_step_holds_the_last_finite_weights(tmp_path, tiny_model_dir, tiny_tokenizer,
                                                                        train_in_folder, poison):
    from mathtune.fastpath import FastPath

    real, calls = FastPath(torch.device("cpu")).loss_fn, {"n": 0}

    def poisoned(model, batch):
        calls["n"] += 1
        value = real(model, batch)
        if calls["n"] != 2:  # step 2 (one micro-batch a step)
            return value
        return value * float("nan") if poison == "loss" else NanGradient.apply(value)

    model, data, args = tiny_training(tiny_model_dir, tiny_tokenizer)
    result = train_in_folder(tmp_path, model, tiny_tokenizer, data, [], loss_fn=poisoned, **args)
    assert result.global_step == 3
    weights = [load_file(tmp_path / f"checkpoint-{s}" / "adapter_model.safetensors") for s in (1, 2, 3)]
    for saved in weights:
        assert all(torch.isfinite(t).all() for t in saved.values())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # step 2 changed nothing
    assert not all(torch.equal(weights[1][k], weights[2][k]) for k in weights[0])  # step 3 trained again
    assert json.loads((tmp_path / "checkpoint-2" / STATE_FILE).read_text())["global_step"] == 2


def test_non_finite_weights_are_never_saved(tmp_path, tiny_model_dir, tiny_tokenizer, monkeypatch, train_in_folder):
    from mathtune.train import NonFiniteLoss

    real_step, calls = torch.optim.AdamW.step, {"n": 0}

    def corrupting_step(self, *args, **kwargs):
        out = real_step(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:
            with torch.no_grad():
                self.param_groups[0]["params"][0].fill_(float("nan"))
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", corrupting_step)
    model, data, args = tiny_training(tiny_model_dir, tiny_tokenizer)
    with pytest.raises(NonFiniteLoss, match="non-finite weights at step 2; no checkpoint written"):
        train_in_folder(tmp_path, model, tiny_tokenizer, data, [], **args)
    assert names(tmp_path) == ["checkpoint-1", "logging.jsonl"]


# -- merged exports and answer files ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def adapter(tmp_path_factory, tiny_model_dir, tiny_tokenizer, train_in_folder) -> Path:
    """A one-step LoRA checkpoint of the tiny model (its adapter_config names the base folder)."""
    model, data, args = tiny_training(tiny_model_dir, tiny_tokenizer)
    run_dir = tmp_path_factory.mktemp("adapter")
    return train_in_folder(run_dir, model, tiny_tokenizer, data, [], **args).last_checkpoint


def test_failed_export_keeps_the_earlier_merged_folder(adapter, monkeypatch, capsys):
    from transformers import PreTrainedModel

    assert main(["export", "--ckpt_dir", str(adapter)]) == 0
    merged = adapter.with_name(adapter.name + "-merged")
    before = {p.name: p.read_bytes() for p in merged.iterdir()}
    real = PreTrainedModel.save_pretrained

    def disk_full(self, folder, *args, **kwargs):
        real(self, folder, *args, **kwargs)
        raise _enospc()

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", disk_full)
    capsys.readouterr()
    assert main(["export", "--ckpt_dir", str(adapter)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"'{merged}' holds an earlier export; it is replaced once this one is written",
                   f"mathtune export: error: cannot write merged model to '{merged}': No space left on device"]
    assert {p.name: p.read_bytes() for p in merged.iterdir()} == before
    assert not [p for p in adapter.parent.iterdir() if p.name.startswith(".")]


def test_export_never_replaces_a_folder_that_is_not_a_merged_model(adapter, tmp_path, capsys):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    for target, needle in ((precious, "holds something other than a merged model"),
                           (adapter / "sub", "overlaps the checkpoint"), (adapter.parent, "overlaps the checkpoint")):
        assert main(["export", "--ckpt_dir", str(adapter), "--output_dir", str(target)]) == 2
        assert needle in capsys.readouterr().err
    assert (precious / "notes.txt").read_text() == "keep me"
    assert (adapter / "adapter_model.safetensors").is_file()


def test_embedded_conversion_into_an_unwritable_cache_fails_in_one_line_before_reading_the_model(tmp_path):
    from mathtune.embedded import convert_gguf

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match=r"cannot write the converted model to .*MATHTUNE_CACHE"):
        convert_gguf(tmp_path / "never-read.gguf", blocker / "cache" / "SmolLM2")


@pytest.mark.parametrize("how", ["fails", "disk full", "done by another process"])
def test_embedded_conversion_leaves_a_whole_folder_or_none(tmp_path, monkeypatch, tiny_model_dir, how):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mathtune import embedded

    def dequantize(gguf):
        if how == "fails":
            raise RuntimeError("the GGUF is corrupt")
        model, tokenizer = AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(
            tiny_model_dir)
        if how == "disk full":
            monkeypatch.setattr(type(tokenizer), "save_pretrained",
                                lambda *a, **k: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
        return model, tokenizer

    monkeypatch.setattr(embedded, "_dequantize", dequantize)
    cache = tmp_path / "cache"
    target = cache / "SmolLM2"
    if how == "done by another process":
        target.mkdir(parents=True)
        (target / "config.json").write_text("{}")
        embedded.convert_gguf(tmp_path / "x.gguf", target)
        assert (target / "config.json").read_text() == "{}"  # the other process's folder is kept as it is
    elif how == "fails":
        with pytest.raises(RuntimeError, match="corrupt"):
            embedded.convert_gguf(tmp_path / "x.gguf", target)
    else:
        with pytest.raises(UserError, match="cannot write the converted model .*: No space left on device"):
            embedded.convert_gguf(tmp_path / "x.gguf", target)
    assert sorted(p.name for p in cache.iterdir()) == (["SmolLM2"] if how == "done by another process" else [])


def test_a_setup_failure_after_the_run_folder_appeared_leaves_no_folder_behind(tmp_path, tiny_model_dir, math_jsonl,
                                                                                 monkeypatch):
    from mathtune import sft

    def broken_attach(*args, **kwargs):  # fails after the "before" evaluation, when the run folder exists
        raise UserError("injected failure while attaching the adapters")

    monkeypatch.setattr(sft, "attach_lora", broken_attach)
    output = tmp_path / "runs"
    assert main(["sft", "--model", str(tiny_model_dir), "--dataset", str(math_jsonl), "--output_dir", str(output),
                 "--eval_benchmarks", "rg:arithmetic", "--eval_limit", "1"]) == 2
    assert not output.exists()  # neither the run folder nor the folders made for it
    keep = tmp_path / "existing"
    keep.mkdir()
    assert main(["sft", "--model", str(tiny_model_dir), "--dataset", str(math_jsonl), "--output_dir", str(keep),
                 "--eval_benchmarks", "rg:arithmetic", "--eval_limit", "1"]) == 2
    assert keep.is_dir() and not any(keep.iterdir())  # a folder the user made stays
