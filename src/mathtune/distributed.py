"""Several processes, one run: torch.distributed set up from torchrun's environment, data parallel (DDP) or sharded
(FSDP2's `fully_shard`) training, and the few collectives the loop, the run folder and evaluation need.

Nothing here runs in a single process: `current()` is then `SINGLE` and callers keep their one-process path, so a
run on one GPU makes no distributed call at all.

How N ranks reproduce one rank (same global batch): every rank computes the same plan of optimizer steps; each step's
rows are split across ranks by tokens (longest first, to the least-loaded rank) and packed per rank; every rank runs
the same number of micro-batches (a rank short of rows runs a zero-weight one), because FSDP all-gathers in every
forward and DDP reduces in the last backward, so the ranks must meet equally often. The step's trained-token count is
known to every rank from the plan, and each rank's loss is divided by it (times the world size, since DDP and FSDP
average gradients), so the summed gradient is the one-process gradient of the token-weighted loss (up to the order
of floating-point sums).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .data.packing import Batch, pack_rows
from .errors import UserError


@dataclass(frozen=True)
class Dist:
    """Where this process stands among the job's processes."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = Dist()


def launched() -> bool:
    """Started by torchrun (or another launcher that sets its variables) with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def init() -> Dist:
    """Join the process group torchrun's environment describes (NCCL on GPUs, gloo on CPUs); SINGLE when the job has
    one process. On a GPU each rank takes the card of its LOCAL_RANK, so `cuda` then means that card."""
    import torch
    import torch.distributed as dist

    if not launched():
        return SINGLE
    if not dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            # Every rank checks the node's process count, not only its own index: the launcher prints rank 0's
            # error alone, and no process group exists yet through which another rank's could reach it.
            per_node = max(local + 1, int(os.environ.get("LOCAL_WORLD_SIZE", "0") or 0))
            if per_node > torch.cuda.device_count():
                raise UserError(f"{per_node} processes on this node but {torch.cuda.device_count()} GPUs visible: "
                                "start at most that many processes per node (NCCL takes one GPU per rank)")
            torch.cuda.set_device(local)
            dist.init_process_group("nccl", device_id=torch.device("cuda", local))
        else:
            dist.init_process_group("gloo")
    return current()


def current() -> Dist:
    """This process's place, SINGLE outside an initialised process group."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return SINGLE
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def is_main() -> bool:
    return current().is_main


def shutdown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def session() -> Iterator[Dist]:
    """`with session() as d:` joins the group when launched so and leaves it after (a second `init` is a no-op)."""
    joined = launched() and not _initialized()
    d = init()
    try:
        yield d
    except BaseException:
        if joined:
            shutdown()  # no barrier: a peer may be gone
        raise
    if joined:
        # Every rank leaves together: rank 0 once aborted in gloo's threads ("terminate called without an active
        # exception") when it destroyed its group as the other rank was leaving, at the end of a 2-rank eval.
        barrier()
        shutdown()


def _initialized() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    import torch.distributed as dist

    if current().active:
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s `obj` on every rank."""
    import torch.distributed as dist

    if not current().active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj: Any) -> list[Any] | None:
    """Every rank's `obj` in rank order on rank 0, None on the others."""
    import torch.distributed as dist

    d = current()
    if not d.active:
        return [obj]
    out: list[Any] = [None] * d.world
    dist.all_gather_object(out, obj)  # all_gather: NCCL has no gather_object without a matching device setup
    return out if d.is_main else None


def all_reduce_sum(values: Sequence[float], device: Any = "cpu") -> list[float]:
    """Elementwise sum over ranks, in float64 so that token counts and loss sums stay exact enough."""
    import torch
    import torch.distributed as dist

    if not current().active:
        return list(values)
    tensor = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def split_rows(rows: Sequence[int], lengths: Sequence[int], world: int) -> list[list[int]]:
    """A step's rows in `world` groups of about equal tokens: longest row first, each to the least-loaded group
    (ties to the lower rank), so every rank computes the same split without talking."""
    groups: list[list[int]] = [[] for _ in range(world)]
    load = [0] * world
    for row in sorted(rows, key=lambda r: (-lengths[r], r)):
        target = min(range(world), key=lambda g: (load[g], g))
        groups[target].append(row)
        load[target] += lengths[row]
    return groups


def micro_batches(rows: Sequence[int], lengths: Sequence[int], *, packing: bool, capacity: int,
                  batch_size: int) -> list[list[int]]:
    """One rank's rows of a step laid into micro-batches as one process lays a step's rows."""
    if not rows:
        return []
    if packing:
        return pack_rows(list(rows), lengths, capacity)
    ordered = sorted(rows)
    return [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]


def share_of_step(step: Sequence[Sequence[int]], lengths: Sequence[int], d: Dist, *, packing: bool, capacity: int,
                  batch_size: int) -> list[tuple[list[int], float]]:
    """This rank's (rows, weight) micro-batches of one step (the plan's micro-batches of every rank), padded to the
    count of the busiest rank with zero-weight repeats of a row so that all ranks run as many forwards."""
    rows = [r for micro in step for r in micro]
    groups = split_rows(rows, lengths, d.world)
    plans = [micro_batches(g, lengths, packing=packing, capacity=capacity, batch_size=batch_size) for g in groups]
    busiest = max(len(p) for p in plans)
    mine = [(m, 1.0) for m in plans[d.rank]]
    filler = [min(rows, key=lambda r: lengths[r])]  # the shortest row: the cheapest forward that still meets
    return mine + [(filler, 0.0)] * (busiest - len(mine))


# -- the model on several ranks ---------------------------------------------------------------------------------------

def _loss_module(model, loss_fn: Callable[[Any, Batch], Any]):
    """The loss as the forward of a module: DDP syncs gradients and FSDP gathers weights only inside a forward of the
    module they wrap, and the loss function reaches into the model's parts (backbone, head) rather than calling it."""
    import torch

    class LossModule(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, batch: Batch):
            return loss_fn(self.model, batch)

    return LossModule()


class Parallel:
    """A model prepared for training on every rank: `loss(batch)` replaces the loss function, `accumulating(last)`
    skips the gradient sync on all but a step's last micro-batch, and the state helpers give single-process files."""

    def __init__(self, model, loss_fn: Callable[[Any, Batch], Any], d: Dist, fsdp: bool, device: Any,
                 layers: Sequence[Any] = ()) -> None:
        """`layers`: the decoder layers, each sharded as its own FSDP group (fastpath.checkpointing.decoder_layers)."""
        self.model, self.dist, self.fsdp, self.device = model, d, fsdp, device
        module = _loss_module(model, loss_fn)
        if fsdp:
            from torch.distributed.fsdp import fully_shard

            # One group per decoder layer, so only one layer's full weights exist at a time; the root group holds
            # the embeddings, the final norm and the head.
            for layer in layers:
                fully_shard(layer)
            self.wrapped = fully_shard(module)
        else:
            from torch.nn.parallel import DistributedDataParallel

            # No buffer sync in forward: the only buffers are rotary tables, identical on every rank, and a broadcast
            # in each forward would be one more collective that every rank must meet.
            cuda = str(device).startswith("cuda")
            self.wrapped = DistributedDataParallel(module, device_ids=[d.local_rank] if cuda else None,
                                                   forward_sync_buffers=False)

    @property
    def world(self) -> int:
        return self.dist.world

    def loss(self, batch: Batch):
        return self.wrapped(batch)

    def reshard(self) -> None:
        """After forwards without a backward (evaluation): FSDP keeps the root's weights gathered after a forward
        for the backward that usually follows; put the shards back, which the optimizer and the state helpers hold."""
        if self.fsdp:
            self.wrapped.reshard()

    @contextlib.contextmanager
    def accumulating(self, last: bool) -> Iterator[None]:
        if last:
            if self.fsdp:
                self.wrapped.set_requires_gradient_sync(True)
            yield
        elif self.fsdp:
            self.wrapped.set_requires_gradient_sync(False)
            yield
        else:
            with self.wrapped.no_sync():
                yield

    def full_model_state(self) -> dict | None:
        """The model's full (unsharded) state dict on rank 0 (None elsewhere) under FSDP; None under DDP, where every
        rank's model already holds the full weights. Every rank must call it. With LoRA only the trainable weights:
        an adapter checkpoint saves nothing else, and gathering the frozen base too would bring all of it to rank
        0's memory at every save (129 GiB for a 70B shape)."""
        if not self.fsdp:
            return None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        adapter = hasattr(self.model, "peft_config")
        options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=adapter)
        state = get_model_state_dict(self.model, options=options)
        return state if self.dist.is_main else None

    def optimizer_state(self, optimizer) -> dict | None:
        """The optimizer state as one process saves it (keyed by the index of each trainable parameter), on rank 0.
        Under FSDP it is gathered from the shards (every rank must call this); under DDP every rank holds it."""
        if not self.fsdp:
            return optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        full = get_optimizer_state_dict(self.model, optimizer,
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if not self.dist.is_main:
            return None
        index = {name: i for i, name in enumerate(self._trainable_names())}
        groups = [{**g, "params": [index[n] for n in g["params"]]} for g in full["param_groups"]]
        return {"state": {index[n]: s for n, s in full["state"].items()}, "param_groups": groups}

    def load_optimizer_state(self, optimizer, saved: dict) -> None:
        """A single-process optimizer state (any number of ranks saved it) into this rank's optimizer."""
        if not self.fsdp:
            optimizer.load_state_dict(saved)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        names = self._trainable_names()
        full = {"state": {names[int(i)]: s for i, s in saved["state"].items()},
                "param_groups": [{**g, "params": [names[int(i)] for i in g["params"]]} for g in saved["param_groups"]]}
        set_optimizer_state_dict(self.model, optimizer, full, options=StateDictOptions(full_state_dict=True))

    def _trainable_names(self) -> list[str]:
        return [name for name, p in self.model.named_parameters() if p.requires_grad]


def local_value(tensor):
    """A plain tensor from a DTensor (FSDP's gradient norm is one, replicated on every rank)."""
    full = getattr(tensor, "full_tensor", None)
    return full() if full is not None else tensor


def peer_lost(exc: BaseException) -> bool:
    """Whether `exc` is a collective that failed because another rank went away. Only torch.distributed's own error
    family and the socket words a dead peer leaves (gloo: "Connection closed by peer", "Connection reset by peer";
    a stalled peer: "timed out"): a backend's name alone is not enough, since an NCCL out-of-memory or a CUDA error
    mentions "nccl" too, and those must keep their traceback."""
    import torch.distributed as dist

    text = str(exc).lower()
    if "out of memory" in text:
        return False
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    return isinstance(exc, RuntimeError) and any(
        word in text for word in ("connection closed", "connection reset", "broken pipe", "timed out", "timeout"))


PEER_LOST_EXIT = 3
"""Exit code of a rank that lost a peer and said so in its one line (the launcher then adds nothing)."""


@contextlib.contextmanager
def peer_guard(d: Dist, last_checkpoint: Callable[[], Any], command: str = "sft") -> Iterator[None]:
    """A collective that failed because a peer died ends this rank at once with one line naming the last complete
    checkpoint (saves are staged then renamed, so it is intact whatever moment the peer died at). At once: torchrun
    is about to SIGTERM the survivors, and a teardown through a dead peer's collectives could hang."""
    try:
        yield
    except Exception as exc:
        if not d.active or isinstance(exc, UserError) or not peer_lost(exc):
            raise
        import sys

        last = last_checkpoint()
        print(f"mathtune {command}: error: rank {d.rank} lost another rank (killed or crashed), so training stopped; "
              f"last complete checkpoint: {last or 'none yet'}", file=sys.stderr, flush=True)
        os._exit(PEER_LOST_EXIT)


def stop_on_signal(d: Dist):
    """sft's Ctrl-C/SIGTERM handler; on several ranks, the same signal arriving twice within a few seconds counts once:
    a Ctrl-C reaches each rank from the terminal and again from torchrun, which forwards what it gets (and a second
    signal would otherwise mean 'quit at once, without a checkpoint')."""
    import time

    from .signals import StopOnSignal

    if not d.active:
        return StopOnSignal()

    class StopTogether(StopOnSignal):
        first = 0.0

        def _handle(self, signum, frame) -> None:
            if self.requested and time.monotonic() - self.first < 5.0:
                return
            self.first = self.first or time.monotonic()
            if d.is_main or self.requested:
                super()._handle(signum, frame)
            else:
                self.requested = True  # rank 0 says it once

    return StopTogether()
