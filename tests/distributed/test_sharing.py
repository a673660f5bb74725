"""How a step is shared out across ranks, without launching any: every row once, balanced by tokens, equal forward
counts; and the launcher's checks of its environment."""

from __future__ import annotations

import random

import pytest

from mathtune.cli import main
from mathtune.distributed import SINGLE, Dist, current, share_of_step, split_rows


@pytest.mark.parametrize("world", [2, 3, 4])
def test_split_covers_every_row_once_and_balances_tokens(world):
    rng = random.Random(world)
    lengths = [rng.randint(10, 400) for _ in range(50)]
    rows = rng.sample(range(50), 23)
    groups = split_rows(rows, lengths, world)
    assert sorted(r for g in groups for r in g) == sorted(rows)
    loads = [sum(lengths[r] for r in g) for g in groups]
    # Longest-first to the least loaded: no group exceeds another by more than the longest row.
    assert max(loads) - min(loads) <= max(lengths[r] for r in rows)
    assert groups == split_rows(list(reversed(rows)), lengths, world), "every rank must compute the same split"


@pytest.mark.parametrize(("packing", "capacity", "batch_size"), [(True, 300, 1), (False, 0, 2)])
def test_each_rank_runs_as_many_micro_batches_and_the_padding_weighs_nothing(packing, capacity, batch_size):
    lengths = [250, 40, 30, 20, 260, 10, 90]
    step = [[0, 1], [2, 3, 4], [5, 6]]
    shares = [share_of_step(step, lengths, Dist(rank, 3), packing=packing, capacity=capacity, batch_size=batch_size)
              for rank in range(3)]
    assert len({len(s) for s in shares}) == 1
    real = sorted(r for share in shares for rows, weight in share if weight for r in rows)
    assert real == sorted(r for micro in step for r in micro)
    for share in shares:
        for rows, weight in share:
            assert weight in (0.0, 1.0)
            if packing and weight:
                assert sum(lengths[r] for r in rows) <= capacity or len(rows) == 1
            if not packing:
                assert len(rows) <= batch_size


def test_a_step_with_fewer_rows_than_ranks_still_meets_on_every_rank():
    shares = [share_of_step([[3]], [5, 5, 5, 7], Dist(rank, 2), packing=True, capacity=64, batch_size=1)
              for rank in range(2)]
    assert shares == [[([3], 1.0)], [([3], 0.0)]]


def test_one_process_is_single():
    assert current() == SINGLE and not SINGLE.active and SINGLE.is_main


@pytest.mark.parametrize(("env", "message"), [
    ({"NPROC_PER_NODE": "two"}, "must be whole numbers"),
    ({"NPROC_PER_NODE": "2", "NNODES": "2", "NODE_RANK": "2"}, "0 <= NODE_RANK < NNODES"),
    ({"NPROC_PER_NODE": "0"}, "NPROC_PER_NODE >= 1"),
])
def test_launcher_refuses_a_bad_environment_in_one_line(monkeypatch, capsys, tmp_path, env, message):
    for key in ("LOCAL_RANK", "RANK", "NNODES", "NODE_RANK"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(["sft", "--dataset", "x.jsonl", "--output_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and err.startswith("mathtune sft: error:")
    assert not list(tmp_path.iterdir())


def test_too_many_processes_for_the_gpus_is_refused_on_rank_0_too(monkeypatch):
    """Rank 0 alone prints a user error, so rank 0 must raise it as well when only ranks 2 and 3 lack a GPU."""
    import torch
    import torch.distributed as dist

    from mathtune import distributed
    from mathtune.errors import UserError

    joined: list[str] = []
    for key, value in {"WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "4", "LOCAL_RANK": "0", "RANK": "0"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **kw: joined.append(backend))
    with pytest.raises(UserError, match="4 processes on this node but 2 GPUs visible"):
        distributed.init()
    assert not joined, "joined a process group that the other ranks could never complete"


@pytest.mark.parametrize(("exc", "lost"), [
    (RuntimeError("[gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:4242"), True),
    (RuntimeError("[gloo/transport/tcp/pair.cc:598] Read error [127.0.0.1]:4242: Connection reset by peer"), True),
    (RuntimeError("Timed out waiting 1800000ms for recv operation to complete"), True),
    (RuntimeError("NCCL error in: ProcessGroupNCCL.cpp:1970, unhandled cuda error: out of memory"), False),
    (RuntimeError("CUDA error: an illegal memory access was encountered (while running an nccl kernel)"), False),
    (RuntimeError("gloo: expected a tensor of 4 elements"), False),
    (ValueError("connection closed"), False),
])
def test_only_a_lost_peer_counts_as_one(exc, lost):
    from mathtune.distributed import peer_lost

    assert peer_lost(exc) is lost


def test_a_dist_error_is_a_lost_peer_unless_it_ran_out_of_memory():
    import torch.distributed as dist

    from mathtune.distributed import peer_lost

    assert peer_lost(dist.DistNetworkError("remote process exited or there was a network error"))
    assert not peer_lost(dist.DistBackendError("NCCL error: ncclUnhandledCudaError: out of memory"))


def test_fsdp_lora_save_gathers_the_adapter_alone(tiny_model_dir, lora_model, tmp_path):
    """One rank of gloo in this process: the state gathered for a LoRA checkpoint is the trainable weights alone
    (the frozen base is not brought to rank 0), and it is exactly what the adapter file holds."""
    import torch
    import torch.distributed as dist
    from peft import get_peft_model_state_dict

    from mathtune.distributed import Parallel
    from mathtune.fastpath.checkpointing import decoder_layers

    model = lora_model(tiny_model_dir)
    want = {k: v.clone() for k, v in get_peft_model_state_dict(model).items()}
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        parallel = Parallel(model, lambda m, batch: None, Dist(0, 1), True, "cpu", decoder_layers(model))
        state = parallel.full_model_state()
        assert state is not None and set(state) == trainable
        model.save_pretrained(tmp_path / "adapter", safe_serialization=True, state_dict=state)
    finally:
        dist.destroy_process_group()
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert saved.keys() == want.keys()
    for name, tensor in want.items():
        torch.testing.assert_close(saved[name], tensor, rtol=0, atol=0, msg=name)
