"""Process-group helpers and cross-rank gathers for contrastive losses.

A contrastive loss needs the *global* batch: every rank's embeddings are negatives (or positives) for every other
rank's anchors. :func:`gather_with_grad` concatenates a tensor from all ranks along dim 0 and keeps the autograd graph;
its backward (that of ``torch.distributed.nn.functional.all_gather``) *sums* the incoming gradients of all ranks
before handing each rank the slice of its own rows. The widespread ``GatherLayer`` that returns only the local slice
of the local gradient silently drops the gradient that other ranks' losses send to these rows.

Every helper works without an initialised process group (or with one rank): it is then the identity, so the same
code runs in one process and under ``torchrun``.
"""

from __future__ import annotations

import os
import warnings
from datetime import timedelta

import torch
import torch.distributed as dist
from monai.utils import evenly_divisible_all_gather

from .device import local_device

__all__ = [
    "init_distributed",
    "is_distributed",
    "world_size",
    "rank",
    "barrier",
    "gather_with_grad",
    "gather_no_grad",
]


def init_distributed(backend: str | None = None, timeout_s: float = 1800.0) -> bool:
    """Initialise the default process group from the environment that ``torchrun`` sets.

    Reads ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` (``env://``). Backend: NCCL when CUDA is
    available (the current CUDA device is then set to :func:`local_device`), gloo on CPU, unless ``backend`` is given.

    Returns:
        True when a process group is initialised on return; False (and nothing done) for a single process, i.e.
        when ``WORLD_SIZE`` is unset or 1.
    """
    if _initialised():
        return True
    if int(os.environ.get("WORLD_SIZE", 1)) <= 1:
        return False
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":  # one GPU per process
        torch.cuda.set_device(local_device())
    dist.init_process_group(backend=backend, init_method="env://", timeout=timedelta(seconds=timeout_s))
    return True


def _initialised() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of processes in the default group (1 when torch.distributed is not initialised)."""
    return dist.get_world_size() if _initialised() else 1


def rank() -> int:
    """Rank of this process in the default group (0 when torch.distributed is not initialised)."""
    return dist.get_rank() if _initialised() else 0


def barrier() -> None:
    """Wait until every rank of the default group arrives here (nothing without an initialised process group)."""
    if _initialised():
        dist.barrier()


def is_distributed() -> bool:
    """True when a default process group with more than one rank is initialised."""
    return world_size() > 1


def _gather_lengths(tensor: torch.Tensor) -> list[int]:
    """Leading sizes of ``tensor`` on all ranks; raises when the trailing shapes differ between ranks.

    One tiny collective (and one host sync) that lets ranks hold different batch sizes (e.g. the last, short batch
    of a loader with ``drop_last=False``), which a plain all-gather does not allow.
    """
    if tensor.ndim == 0:
        raise ValueError("cannot gather a 0-d tensor along dim 0; give it a leading batch dimension")
    shape = torch.tensor(tensor.shape, dtype=torch.int64, device=tensor.device)
    shapes = [torch.empty_like(shape) for _ in range(world_size())]
    dist.all_gather(shapes, shape)
    rows = torch.stack(shapes).tolist()
    trailing = {tuple(r[1:]) for r in rows}
    if len(trailing) > 1:
        raise ValueError(f"cannot gather tensors whose shapes differ beyond dim 0 across ranks: {rows}")
    return [r[0] for r in rows]


def _pad_rows(tensor: torch.Tensor, rows: int) -> torch.Tensor:
    if tensor.shape[0] == rows:
        return tensor
    return torch.cat([tensor, tensor.new_zeros((rows - tensor.shape[0], *tensor.shape[1:]))])


def _unpad(parts: list[torch.Tensor] | tuple[torch.Tensor, ...], lengths: list[int]) -> torch.Tensor:
    return torch.cat([part[:length] for part, length in zip(parts, lengths)])


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (``[B_r, ...]`` on rank r) from all ranks into ``[sum_r B_r, ...]``, rank-major,
    differentiably.

    Backward: the gradient arriving at the gathered rows of *every* rank is summed, and each rank receives the sum for
    its own rows. If each of the ``world_size`` ranks computes the same scalar loss ``L`` from the gathered tensor,
    the local gradient is therefore ``world_size * dL/d(local rows)``, which DDP's gradient *averaging* turns back
    into exactly ``dL/dθ`` of one process on the global batch.

    Identity when torch.distributed is not initialised or has one rank.
    """
    if not is_distributed():
        return tensor
    import torch.distributed.nn.functional as dist_nn  # imported lazily: absent from builds without distributed

    lengths = _gather_lengths(tensor)
    with warnings.catch_warnings():
        # torch >= 2.10 marks it deprecated in favour of a private functional API; its autograd is what we need.
        warnings.filterwarnings("ignore", message=".*all_gather is deprecated.*", category=FutureWarning)
        parts = dist_nn.all_gather(_pad_rows(tensor, max(lengths)))
    return _unpad(parts, lengths)


def gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (``[B_r, ...]`` on rank r) from all ranks into ``[sum_r B_r, ...]``, rank-major,
    without autograd (for labels and other targets): MONAI's ``evenly_divisible_all_gather``, which pads the ranks'
    rows to one length and removes the padding again. Boolean tensors are supported.

    Identity when torch.distributed is not initialised or has one rank.
    """
    if not is_distributed():
        return tensor
    _gather_lengths(tensor)  # a clear error when the trailing shapes differ between ranks
    payload = tensor.detach()
    is_bool = payload.dtype == torch.bool
    if is_bool:  # not every backend gathers bool
        payload = payload.to(torch.uint8)
    gathered = evenly_divisible_all_gather(payload.contiguous(), concat=True)
    return gathered.bool() if is_bool else gathered
