"""The training loop on a tiny model: loss goes down, only LoRA moves, seeded runs repeat, packing is exact."""

import json

import pytest
import torch

from mathtune.data.packing import collate, plan_steps
from mathtune.data.tokenize import encode_conversation
from mathtune.fastpath.loss import loss_sum
from mathtune.model import attach_lora, load_model


def examples(tokenizer, n=24):
    rows = [(f"What is {a} + {b}?", f"{a} + {b} = {a + b}. The answer is {a + b}.") for a in range(1, 7)
            for b in range(1, 5)][:n]
    return [encode_conversation(tokenizer, [{"role": "user", "content": q}, {"role": "assistant", "content": r}])
            for q, r in rows]


def lora_model(model_dir, seed=0):
    torch.manual_seed(seed)
    model = load_model(model_dir, "fp32", "cpu")
    return attach_lora(model, rank=8, alpha=16, dropout=0.0, target_modules="all-linear")


def run(tmp_path, model, tokenizer, data, train_in_folder, **overrides):
    settings = dict(learning_rate=5e-3, batch_size=4, gradient_accumulation_steps=2, max_steps=20, logging_steps=1,
                    save_steps=100, eval_steps=100, warmup_ratio=0.0, lr_scheduler_type="constant", seed=7)
    settings.update(overrides)
    run_dir = tmp_path / "run"
    result = train_in_folder(run_dir, model, tokenizer, data, data[:4], **settings)
    losses = [r["loss"] for r in map(json.loads, (run_dir / "logging.jsonl").read_text().splitlines()) if "loss" in r]
    return result, losses


def test_training_lowers_loss_and_moves_only_lora(tmp_path, tiny_model_dir, tiny_tokenizer, train_in_folder):
    model = lora_model(tiny_model_dir)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result, losses = run(tmp_path, model, tiny_tokenizer, examples(tiny_tokenizer), train_in_folder)
    assert result.global_step == 20 and len(losses) == 20
    assert losses[-1] < 0.9 * losses[0] and sum(losses[-5:]) < sum(losses[:5])
    for name, param in model.named_parameters():
        changed = not torch.equal(before[name], param.detach())
        if "lora_B" in name:
            assert changed, name
        if "lora_" not in name:
            assert not changed, name
    assert (result.last_checkpoint / "adapter_model.safetensors").is_file()


def test_seeded_runs_repeat_exactly(tmp_path, tiny_model_dir, tiny_tokenizer, train_in_folder):
    data = examples(tiny_tokenizer)
    _, first = run(tmp_path / "a", lora_model(tiny_model_dir), tiny_tokenizer, data, train_in_folder)
    _, second = run(tmp_path / "b", lora_model(tiny_model_dir), tiny_tokenizer, data, train_in_folder)
    assert first == second


def test_packed_loss_and_gradients_equal_padded(tiny_model_dir, tiny_tokenizer):
    data = examples(tiny_tokenizer, 5)
    rows = [0, 3, 4]
    results = []
    for packing in (True, False):
        model = lora_model(tiny_model_dir, seed=3)
        batch = collate(data, rows, packing=packing, pad_id=tiny_tokenizer.pad_token_id)
        loss = loss_sum(model, batch, torch.device("cpu"))
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((loss.detach(), grads, batch.num_trained))
    (packed_loss, packed_grads, n1), (padded_loss, padded_grads, n2) = results
    assert n1 == n2
    torch.testing.assert_close(packed_loss, padded_loss, rtol=1e-5, atol=1e-5)
    assert packed_grads.keys() == padded_grads.keys()
    for name in packed_grads:
        torch.testing.assert_close(packed_grads[name], padded_grads[name], rtol=1e-4, atol=1e-6)


def test_packed_attention_never_crosses_rows(tiny_model_dir, tiny_tokenizer):
    data = examples(tiny_tokenizer, 3)
    model = load_model(tiny_model_dir, "fp32", "cpu").eval()
    packed = collate(data, [0, 1, 2], packing=True, pad_id=tiny_tokenizer.pad_token_id)
    with torch.no_grad():
        logits = model(input_ids=packed.input_ids, position_ids=packed.position_ids, use_cache=False).logits[0]
        alone = model(input_ids=torch.tensor([data[2].input_ids])).logits[0]
    start = len(data[0]) + len(data[1])
    torch.testing.assert_close(logits[start:], alone, rtol=1e-4, atol=1e-4)
    # Control: the same tokens without restarting positions see the earlier rows and give other logits.
    with torch.no_grad():
        crossed = model(input_ids=packed.input_ids, use_cache=False).logits[0]
    assert not torch.allclose(crossed[start:], alone, atol=1e-3)


def test_plan_steps_packs_each_step_within_capacity_and_keeps_its_rows():
    lengths = [300, 700, 200, 1000, 50, 512, 512, 90, 333]
    packed = plan_steps(lengths, seed=1, epoch=0, rows_per_step=4, batch_size=1, packing=True, capacity=1024)
    plain = plan_steps(lengths, seed=1, epoch=0, rows_per_step=4, batch_size=1, packing=False, capacity=1024)
    assert [sorted(r for b in step for r in b) for step in packed] == [sorted(r for b in s for r in b) for s in plain]
    assert sorted(r for step in packed for b in step for r in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= 1024 for step in packed for b in step)
    assert sum(len(step) for step in packed) < sum(len(step) for step in plain)
    again = plan_steps(lengths, seed=1, epoch=0, rows_per_step=4, batch_size=1, packing=True, capacity=1024)
    other_epoch = plan_steps(lengths, seed=1, epoch=1, rows_per_step=4, batch_size=1, packing=True, capacity=1024)
    assert again == packed and other_epoch != packed


def test_packed_training_follows_the_same_loss_curve_as_padded(tmp_path, tiny_model_dir, tiny_tokenizer,
                                                               train_in_folder):
    data = examples(tiny_tokenizer)
    _, packed = run(tmp_path / "p", lora_model(tiny_model_dir), tiny_tokenizer, data, train_in_folder,
                    packing=True, max_steps=6)
    _, padded = run(tmp_path / "u", lora_model(tiny_model_dir), tiny_tokenizer, data, train_in_folder,
                    packing=False, max_steps=6)
    assert packed == pytest.approx(padded, rel=1e-4)


@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_non_finite_loss_policy(tmp_path, tiny_model_dir, tiny_tokenizer, policy, train_in_folder):
    from mathtune.train import NonFiniteLoss

    calls = {"n": 0}

    def poisoned(model, batch):
        calls["n"] += 1
        value = loss_sum(model, batch, torch.device("cpu"))
        return value * float("nan") if calls["n"] == 3 else value

    model = lora_model(tiny_model_dir)
    data = examples(tiny_tokenizer)
    origins = [f"math.jsonl:{i + 1}" for i in range(len(data))]
    args = dict(learning_rate=1e-3, batch_size=4, gradient_accumulation_steps=1, max_steps=5, logging_steps=1,
                save_steps=1, save_total_limit=None, eval_steps=100, nan_policy=policy)
    run_dir = tmp_path / "run"
    if policy == "stop":
        with pytest.raises(NonFiniteLoss, match=r"step 3; rows: math\.jsonl:\d+"):
            train_in_folder(run_dir, model, tiny_tokenizer, data, [], loss_fn=poisoned, origins=origins, **args)
        # Steps 1 and 2 were saved; the bad step 3 left nothing behind.
        assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith(("checkpoint", ".checkpoint"))) == [
            "checkpoint-1", "checkpoint-2"]
    else:
        result = train_in_folder(run_dir, model, tiny_tokenizer, data, [], loss_fn=poisoned, origins=origins, **args)
        assert result.global_step == 5
        for param in model.parameters():
            assert torch.isfinite(param).all()
