"""The policy's log-probabilities of sampled completions: packed micro-batches (one sequence, positions restarting
per row: what a GPU with the varlen kernel runs) and padded ones (the CPU's) both equal each row scored alone, in
value and in gradient; padding scores 0 and the output head runs only on completion positions."""

from __future__ import annotations

import pytest
import torch

from mathtune.rl.rollout import Rollout, collate, packs, policy_logps

# Prompts and completions of different lengths: left padding, right padding and a one-token completion all occur.
PROMPTS = [[5, 17, 9, 33, 2, 8], [40, 3], [7, 7, 12, 19], [21, 4, 30]]
COMPLETIONS = [[11, 6, 2], [9, 14, 27, 3, 18, 1], [25], [13, 13, 8, 2]]
TEMPERATURE = 0.7


def rollout() -> Rollout:
    return Rollout([list(p) for p in PROMPTS], [list(c) for c in COMPLETIONS], ["x"] * 4, [False] * 4)


def alone(model, prompt: list[int], completion: list[int]) -> torch.Tensor:
    """The reference: the row by itself, no batch, log_softmax at the positions that predict its completion."""
    ids = torch.tensor([prompt + completion])
    logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float() / TEMPERATURE
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(completion)[:, None])[:, 0]


@pytest.mark.parametrize("packed", [True, False])
def test_each_layout_scores_every_row_as_if_alone(lora_model, tiny_model_dir, packed):
    model = lora_model(tiny_model_dir)
    batch = collate(rollout(), [0, 1, 2, 3], pad_id=0, packed=packed)
    got = policy_logps(model, batch, TEMPERATURE)
    assert got.shape == (4, max(len(c) for c in COMPLETIONS))
    for k, (prompt, completion) in enumerate(zip(PROMPTS, COMPLETIONS, strict=True)):
        torch.testing.assert_close(got[k, : len(completion)], alone(model, prompt, completion), atol=1e-5, rtol=1e-5)
        assert torch.all(got[k, len(completion) :] == 0)  # padding: no score
    assert torch.equal(batch.completion_mask.sum(1), torch.tensor([len(c) for c in COMPLETIONS]))


def test_packed_and_padded_give_the_same_gradient(lora_model, tiny_model_dir):
    grads = []
    for packed in (True, False):
        model = lora_model(tiny_model_dir)
        batch = collate(rollout(), [3, 1, 0], pad_id=0, packed=packed)
        weights = torch.linspace(-1.0, 1.0, batch.completion_mask.numel()).view_as(batch.completion_mask)
        (policy_logps(model, batch, TEMPERATURE) * weights * batch.completion_mask).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 0
    for name, grad in grads[0].items():
        torch.testing.assert_close(grad, grads[1][name], atol=1e-5, rtol=1e-4, msg=name)


def test_a_packed_batch_is_one_sequence_with_labels_only_where_completions_are():
    batch = collate(rollout(), [0, 2], pad_id=0, packed=True)
    inputs = batch.inputs
    assert inputs.input_ids.tolist() == [PROMPTS[0] + COMPLETIONS[0] + PROMPTS[2] + COMPLETIONS[2]]
    assert inputs.position_ids.tolist() == [list(range(9)) + list(range(5))]
    assert inputs.attention_mask is None
    labels = inputs.labels[0].tolist()
    # position t holds the completion token it predicts: the last prompt token predicts the first completion token
    assert [t for t in labels if t != -100] == COMPLETIONS[0] + COMPLETIONS[2]
    assert labels.index(COMPLETIONS[0][0]) == len(PROMPTS[0]) - 1


def test_only_a_model_with_a_varlen_kernel_is_packed(tiny):
    model, _ = tiny
    assert packs(model) is False  # the CPU: no varlen kernel, padded micro-batches


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="the varlen kernel needs CUDA")
def test_on_a_gpu_the_varlen_kernel_packs_and_agrees_with_padding(lora_model, tiny_model_dir):
    from mathtune.fastpath.attention import enable

    model = lora_model(tiny_model_dir).to("cuda", torch.bfloat16)
    assert enable(model, "cuda") is None and packs(model)
    got = {}
    for packed in (True, False):
        model.zero_grad(set_to_none=True)
        batch = collate(rollout(), [0, 1, 2, 3], pad_id=0, device="cuda", packed=packed)
        logps = policy_logps(model, batch, TEMPERATURE)
        (logps * batch.completion_mask).sum().backward()
        grads = [p.grad.float().norm() for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g) for g in grads)
        got[packed] = logps.detach().float()
    torch.testing.assert_close(got[True], got[False], atol=5e-2, rtol=5e-2)
