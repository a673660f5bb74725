"""The fast path on the CPU: the fused LoRA forward equals peft's, the loss on trained positions only equals the
full-logits loss, `apply` changes nothing but checkpointing without CUDA, and its switches read FastArgs."""

import pytest
import torch
import torch.nn.functional as F
from test_train import examples

from mathtune import fastpath
from mathtune.config import FastArgs
from mathtune.data.packing import collate
from mathtune.fastpath import FastPath, attention, switch
from mathtune.fastpath.checkpointing import set_gradient_checkpointing
from mathtune.fastpath.lora import fast_lora
from mathtune.fastpath.loss import loss_sum
from mathtune.model import attach_lora, load_model


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_fast_lora_equals_peft_forward_and_gradients(tiny_model_dir, tiny_tokenizer, dropout, lora_model):
    data = examples(tiny_tokenizer, 3)
    batch = collate(data, [0, 1, 2], packing=True, pad_id=tiny_tokenizer.pad_token_id)
    results = []
    for fast in (False, True):
        model = lora_model(tiny_model_dir, dropout)
        model.train()
        if fast:
            assert fast_lora(model) == 14  # 7 linear layers x 2 decoder layers
        torch.manual_seed(11)
        loss = loss_sum(model, batch, torch.device("cpu"))
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
    (slow_loss, slow_grads), (fast_loss, fast_grads) = results
    torch.testing.assert_close(fast_loss, slow_loss, rtol=1e-5, atol=1e-5)
    assert fast_grads.keys() == slow_grads.keys() and len(fast_grads) == 28
    for name in slow_grads:
        torch.testing.assert_close(fast_grads[name], slow_grads[name], rtol=1e-4, atol=1e-6)


def test_fast_lora_leaves_disabled_and_merged_adapters_alone(tiny_model_dir, lora_model):
    model = lora_model(tiny_model_dir).eval()
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        want = model(input_ids=ids).logits
        fast_lora(model)
        torch.testing.assert_close(model(input_ids=ids).logits, want, rtol=1e-5, atol=1e-5)
        with model.disable_adapter():
            base = model(input_ids=ids).logits
        assert not torch.allclose(base, want, atol=1e-4)
        model.merge_adapter()
        torch.testing.assert_close(model(input_ids=ids).logits, want, rtol=1e-4, atol=1e-4)


def test_loss_on_trained_positions_equals_full_logits_loss(tiny_model_dir, tiny_tokenizer):
    data = examples(tiny_tokenizer, 3)
    model = load_model(tiny_model_dir, "fp32", "cpu")
    for packing in (True, False):
        batch = collate(data, [0, 1, 2], packing=packing, pad_id=tiny_tokenizer.pad_token_id)
        inputs = {"input_ids": batch.input_ids, "position_ids": batch.position_ids,
                  "attention_mask": batch.attention_mask}
        logits = model(**{k: v for k, v in inputs.items() if v is not None}, use_cache=False).logits
        want = F.cross_entropy(logits.reshape(-1, logits.size(-1)), batch.labels.reshape(-1), reduction="sum")
        torch.testing.assert_close(loss_sum(model, batch, torch.device("cpu")), want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(FastPath("cpu").loss_fn(model, batch), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_apply_changes_only_checkpointing_and_packed_attention_on_cpu(tiny_model_dir, checkpointing, lora_model):
    model = lora_model(tiny_model_dir)
    before = {n: type(m) for n, m in model.named_modules()}
    path = fastpath.apply(model, FastArgs(gradient_checkpointing=checkpointing), "cpu")
    assert path.fused_linear_ce is None
    assert {n: type(m) for n, m in model.named_modules()} == before
    assert not any("forward" in vars(m) for m in model.modules())
    # packed rows run SDPA row by row (no flash kernel here): mathtune_varlen without a kernel
    assert model.get_base_model().config._attn_implementation == attention.NAME
    assert attention.kernel_of(model) is None
    assert path.report["attention"] == "mathtune_varlen (per-row sdpa: not a CUDA device)"
    assert "fast_lora_modules" not in path.report and "liger" not in path.report
    layers = model.get_base_model().model.layers
    assert [layer.gradient_checkpointing for layer in layers] == [checkpointing] * 2
    assert path.report.get("checkpointed_layers") == (2 if checkpointing else None)


def test_apply_turns_on_what_is_asked_for_on_cpu_too(tiny_model_dir, lora_model):
    model = lora_model(tiny_model_dir)
    path = fastpath.apply(model, FastArgs(fast_lora=True, checkpoint_layers=1, attn_impl="eager"), "cpu")
    assert path.report["fast_lora_modules"] == 14 and path.report["checkpointed_layers"] == 1
    assert path.report["attention"] == model.get_base_model().config._attn_implementation == "sdpa"
    assert sum("forward" in vars(m) for m in model.modules()) == 14


@pytest.mark.parametrize(("flag", "device", "available", "want"), [
    (None, "cuda", True, True), (None, "cuda:1", True, True), (None, "cuda", False, False),
    (None, "cpu", True, False), (True, "cpu", False, True), (True, "cuda", True, True), (False, "cuda", True, False),
])
def test_switch_is_one_tri_state(flag, device, available, want):
    assert switch(flag, device, available) is want


def test_partial_gradient_checkpointing(tiny_model_dir, lora_model):
    model = lora_model(tiny_model_dir)
    assert set_gradient_checkpointing(model, 1) == 1
    layers = model.get_base_model().model.layers
    assert [layer.gradient_checkpointing for layer in layers] == [True, False]
    assert set_gradient_checkpointing(model, None) == 2
    assert set_gradient_checkpointing(model, 0) == 0
    assert not any(layer.gradient_checkpointing for layer in layers)


def test_fast_lora_in_bf16_keeps_fp32_adapter_weights_and_gradients(tiny_model_dir, tiny_tokenizer):
    data = examples(tiny_tokenizer, 3)
    batch = collate(data, [0, 1, 2], packing=True, pad_id=tiny_tokenizer.pad_token_id)
    results = []
    for fast in (False, True):
        torch.manual_seed(5)
        model = attach_lora(load_model(tiny_model_dir, "bf16", "cpu"), rank=4, alpha=16, dropout=0.0,
                            target_modules="all-linear")
        for name, p in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.1)
        assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)  # peft upcasts adapters
        if fast:
            fast_lora(model)
        loss = loss_sum(model, batch, torch.device("cpu"))
        loss.backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        assert all(g.dtype == torch.float32 for g in grads.values())
        results.append((loss.detach(), grads))
    (slow_loss, slow_grads), (fast_loss, fast_grads) = results
    torch.testing.assert_close(fast_loss, slow_loss, rtol=2e-2, atol=0.0)
    for name in slow_grads:
        cos = F.cosine_similarity(fast_grads[name].flatten(), slow_grads[name].flatten(), dim=0)
        assert cos > 0.99, (name, float(cos))
