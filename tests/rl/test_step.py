"""One GRPO optimizer step (rl.step.take_step) and the --nan_policy: a step whose gradient is not finite changes no
weight, and is either skipped and logged as such or stops the run naming the step."""

from __future__ import annotations

import pytest
import torch

from mathtune.rl.config import build
from mathtune.rl.rollout import Rollout
from mathtune.rl.step import GenerationBatch, take_step
from mathtune.train import NonFiniteLoss


def _batch() -> GenerationBatch:
    rollout = Rollout([[5, 17, 9], [5, 17, 9], [40, 3], [40, 3]], [[11, 6, 2], [9, 14], [25, 4, 4, 1], [13]],
                      ["a", "b", "c", "d"], [False] * 4)
    rewards = torch.tensor([[1.0], [0.0], [0.0], [1.0]])
    return GenerationBatch(rollout, ["q1", "q1", "q2", "q2"], rewards, torch.tensor([0.7, -0.7, -0.7, 0.7]), {},
                           None, None)


def _step(tiny_model_dir, lora_model, tiny_tokenizer, tmp_path, policy: str, poison: bool):
    cfg = build({"model": {"model_id_or_path": str(tiny_model_dir)}, "run": {"output_dir": str(tmp_path)},
                 "optim": {"nan_policy": policy, "batch_size": 2, "learning_rate": 1e-2},
                 "grpo": {"num_generations": 2, "max_completion_length": 8}})
    model = lora_model(tiny_model_dir)
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    if poison:  # the loss stays finite; one parameter's gradient does not
        params[0].register_hook(lambda grad: torch.full_like(grad, float("nan")))
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    try:
        record = take_step(model, _batch(), params, optimizer, cfg, tiny_tokenizer, 3)
    finally:
        changed = any(not torch.equal(p, b) for p, b in zip(params, before, strict=True))
    return record, changed


def test_a_finite_step_moves_the_weights(tiny_model_dir, lora_model, tiny_tokenizer, tmp_path):
    record, changed = _step(tiny_model_dir, lora_model, tiny_tokenizer, tmp_path, "stop", poison=False)
    assert changed and "skipped" not in record and record["grad_norm"] > 0


def test_skip_leaves_the_weights_and_logs_the_skipped_step(tiny_model_dir, lora_model, tiny_tokenizer, tmp_path,
                                                          capsys):
    record, changed = _step(tiny_model_dir, lora_model, tiny_tokenizer, tmp_path, "skip", poison=True)
    assert not changed and record["skipped"] == 1
    assert "non-finite gradient (1 of" in capsys.readouterr().out


def test_stop_names_the_step_and_the_tensor_and_changes_nothing(tiny_model_dir, lora_model, tiny_tokenizer,
                                                                tmp_path):
    first = next(name for name, p in lora_model(tiny_model_dir).named_parameters() if p.requires_grad)
    with pytest.raises(NonFiniteLoss, match=rf"non-finite gradient \(1 of \d+ trained tensors, first: "
                                            rf"{first.replace('.', '[.]')}\) at step 3"):
        _step(tiny_model_dir, lora_model, tiny_tokenizer, tmp_path, "stop", poison=True)
