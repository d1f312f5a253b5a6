"""Data-parallel training over several processes (``torchrun``), on one machine or many.

``torchrun --nproc_per_node N -m warpphys fit ...`` starts N copies of the same job; torchrun
sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``, and
:func:`init_from_env` joins them in one process group (NCCL on GPUs, gloo on CPUs). Every rank
builds the same data and model from the same seed (rank 0's weights are then broadcast, as
DistributedDataParallel does), draws the same batch permutation, and takes a contiguous slice of
each batch: the *global* batch size stays ``batch_size``, whatever the number of processes.

Gradients are synchronised by hand, once per step, after ``loss.backward()``: one all-reduce of
a flat buffer holding every gradient weighted by the rank's share of the batch (``n_r / n``),
so that the sum over ranks is the gradient of the mean loss over the whole batch, exactly what
one process computes (up to float rounding). This is what DistributedDataParallel does in its
backward hooks; doing it explicitly works for every model of the package, whose training entry
point is ``training_loss`` rather than ``forward`` (DDP only hooks ``forward``), for parameters
that get no gradient in some steps, and for ranks whose slice of a short last batch is empty.
The loss is reduced in the same all-reduce, so every rank takes the same decisions
(divergence guard, gradient clipping, validation, early stopping, time budget).
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist


def env_world_size() -> int:
    """WORLD_SIZE from the environment (1 when not launched by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (from the process group, else from ``RANK``, else 0)."""
    if is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """Processes in the group (1 without one)."""
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    """Whether this process writes files and prints (rank 0, or no distributed run at all)."""
    return rank() == 0


def init_from_env(device: str) -> tuple[str, bool]:
    """Join the process group described by torchrun's environment variables, if any.

    Args:
        device: "cpu" or "cuda[:i]" (already resolved).
    Returns:
        ``(device, started)``: the device this rank uses (``cuda:LOCAL_RANK`` on GPUs) and
        whether this call started the group (the caller then ends it with :func:`shutdown`).
    """
    if env_world_size() <= 1 or is_initialized():
        return device, False
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if device.startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device, backend = f"cuda:{local}", "nccl"
    else:
        backend = "gloo"
    kw = {"device_id": torch.device(device)} if backend == "nccl" else {}
    dist.init_process_group(backend, init_method="env://",
                            timeout=datetime.timedelta(minutes=30), **kw)
    return device, True


def shutdown() -> None:
    if is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def shard(n: int) -> tuple[int, int]:
    """This rank's contiguous slice ``[lo, hi)`` of ``n`` items (sizes differ by at most 1)."""
    w, r = world_size(), rank()
    base, extra = divmod(n, w)
    lo = r * base + min(r, extra)
    return lo, lo + base + (1 if r < extra else 0)


@torch.no_grad()
def broadcast_state(module: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank (as DDP does when it wraps a model)."""
    if world_size() <= 1:
        return
    for tensor in module.state_dict().values():
        if torch.is_tensor(tensor) and tensor.numel():
            dist.broadcast(tensor, src=0)


@torch.no_grad()
def reduce_gradients(params: list[torch.Tensor], weight: float,
                     loss: torch.Tensor) -> float:
    """Set every ``p.grad`` to ``sum over ranks of weight_r * grad_r`` and return
    ``sum over ranks of weight_r * loss_r``, in one all-reduce.

    With ``weight_r = n_r / n`` (the rank's share of the batch) and per-rank mean losses, both
    are the whole batch's mean loss and its gradient. A gradient missing on a rank counts as
    zeros; one missing on every rank stays ``None`` (as in one process: the optimiser skips it).
    """
    ref = params[0] if params else loss
    parts = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).to(ref) * weight
             for p in params]
    parts.append(loss.detach().reshape(1).to(ref) * weight)
    parts.append(torch.tensor([p.grad is not None for p in params], dtype=ref.dtype,
                              device=ref.device))  # how many ranks have each gradient
    flat = torch.cat(parts)
    dist.all_reduce(flat)
    k = 0
    has = flat[-len(params):].tolist() if params else []
    for p, count in zip(params, has, strict=True):
        n = p.numel()
        p.grad = flat[k:k + n].view_as(p) if count > 0 else None
        k += n
    return float(flat[k])


def sum_floats(*values: float) -> list[float]:
    """Sum each value over ranks (float64); identical results on every rank."""
    if world_size() <= 1:
        return list(values)
    buf = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        buf = buf.cuda()
    dist.all_reduce(buf)
    return buf.cpu().tolist()


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any rank."""
    if world_size() <= 1:
        return flag
    return sum_floats(1.0 if flag else 0.0)[0] > 0
