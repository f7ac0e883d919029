"""Two gloo processes on CPU, each holding part of a fixed global batch, against one process on the whole batch.

Design under test (see ``monai_modan.utils.distributed``): every rank computes the loss over *all* global anchors
from the gathered features, so its loss equals the single-process loss; the gather's backward sums the gradients of
all ranks, so the local feature gradient is ``world_size ×`` the single-process gradient of the local rows, and
DDP's averaging (``÷ world_size``) restores exactly the single-process gradient -- checked on leaf features and on
the parameters of a DDP-wrapped model. The hybrid gathers in each of its two terms: checked on shared features and
on separate metadata / instance features (two heads), whose diagnostics hold each term's value.
"""

from __future__ import annotations

import os
import socket
import time
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from monai_modan.utils import device, distributed
from monai_modan.losses import HybridContrastiveLoss, MulSupConLoss, NTXentLoss

WORLD = 2
DEADLINE_S = 120.0  # a hang guard only; the workers need a few seconds

LABELS = torch.tensor(
    [[1, 0, 1, 0, 0], [1, 0, 0, 1, 0], [0, 0, 0, 0, 0], [0, 1, 0, 1, 0],
     [0, 0, 0, 0, 0], [1, 0, 1, 0, 0], [0, 1, 0, 0, 1], [1, 0, 0, 0, 1]]
)  # fmt: skip


class HybridLoss(torch.nn.Module):
    """The hybrid with both terms gathering (or not): on the whole feature vector, or (``separate``) MulSupCon on
    the first half of the features and NT-Xent on the second, as two projection heads would give them."""

    def __init__(self, instance_weight: float = 1.0, separate: bool = False, gather_distributed: bool = True):
        super().__init__()
        self.separate = separate
        self.loss = HybridContrastiveLoss(instance_weight,
                                          metadata_loss=MulSupConLoss(gather_distributed=gather_distributed),
                                          instance_loss=NTXentLoss(gather_distributed=gather_distributed))

    @property
    def last_diagnostics(self) -> dict:
        return self.loss.last_diagnostics

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if not self.separate:
            return self.loss(features, labels)
        half = features.shape[-1] // 2
        return self.loss(features[..., :half], labels, features[..., half:])


# name -> (loss class, its arguments, views, rows held by rank 0 and rank 1)
SCENARIOS = {
    "mulsupcon": (MulSupConLoss, {"temperature": 0.07, "threshold": 0.3}, 2, (4, 4)),
    "mulsupcon_uneven_v3": (MulSupConLoss, {"temperature": 0.1, "threshold": 1 / 3}, 3, (5, 3)),
    "ntxent": (NTXentLoss, {"temperature": 0.1}, 2, (4, 4)),
    "ntxent_uneven": (NTXentLoss, {"temperature": 0.5}, 2, (3, 5)),
    "hybrid": (HybridLoss, {"instance_weight": 0.5}, 2, (4, 4)),
    "hybrid_separate_uneven": (HybridLoss, {"instance_weight": 2.0, "separate": True}, 2, (5, 3)),
}
DDP_LOSSES = {"mulsupcon": MulSupConLoss, "ntxent": NTXentLoss, "hybrid_separate": partial(HybridLoss, separate=True)}


def global_features(views: int, dim: int = 16) -> torch.Tensor:
    return torch.randn(len(LABELS), views, dim, generator=torch.Generator().manual_seed(views))


def rows_of(rank: int, split: tuple[int, int]) -> slice:
    start = sum(split[:rank])
    return slice(start, start + split[rank])


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(12, 8)


def model_inputs() -> torch.Tensor:
    return torch.randn(len(LABELS), 2, 12, generator=torch.Generator().manual_seed(11))


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    # the environment torchrun would set
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    initialised = distributed.init_distributed(backend="gloo", timeout_s=60)
    try:
        results: dict = {
            "initialised": initialised,
            "world_size": distributed.world_size(),
            "rank": distributed.rank(),
            "device": str(device.local_device()),
        }
        for name, (loss_class, kwargs, views, split) in SCENARIOS.items():
            rows = rows_of(rank, split)
            local = global_features(views)[rows].clone().requires_grad_()
            loss_fn = loss_class(**kwargs)
            loss = loss_fn(local, LABELS[rows])
            loss.backward()
            results[name] = {
                "loss": loss.detach(),
                "grad": local.grad,
                "diagnostics": loss_fn.last_diagnostics,
                "local_only": loss_class(**kwargs, gather_distributed=False)(local.detach(), LABELS[rows]),
            }
        for name, loss_class in DDP_LOSSES.items():
            model = torch.nn.parallel.DistributedDataParallel(make_model())
            rows = rows_of(rank, (4, 4))
            loss_class()(model(model_inputs()[rows]), LABELS[rows]).backward()
            results[f"ddp_{name}"] = {n: p.grad for n, p in model.module.named_parameters()}
        # rank 1 alone holds a NaN: both ranks must raise (none may wait in the gather for the other)
        rows = rows_of(rank, (4, 4))
        features = global_features(2)[rows].clone()
        if rank == 1:
            features[0, 0, 0] = float("nan")
        try:
            MulSupConLoss()(features, LABELS[rows])
            results["bad_rank"] = ""
        except ValueError as e:
            results["bad_rank"] = str(e)
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory) -> list[dict]:
    out_dir = tmp_path_factory.mktemp("ddp")
    context = mp.start_processes(
        _worker, args=(_free_port(), str(out_dir)), nprocs=WORLD, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + DEADLINE_S
    try:
        while not context.join(timeout=1):  # raises ProcessRaisedException with the worker's traceback
            if time.monotonic() > deadline:
                pytest.fail(f"distributed workers did not finish within {DEADLINE_S:.0f} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
                process.join(5)
    return [torch.load(out_dir / f"rank{rank}.pt", weights_only=True) for rank in range(WORLD)]


def test_helpers_report_the_process_group(rank_results, monkeypatch):
    assert [r["initialised"] for r in rank_results] == [True, True]
    assert [r["world_size"] for r in rank_results] == [WORLD, WORLD]
    assert [r["rank"] for r in rank_results] == [0, 1]
    expected_devices = [f"cuda:{r}" for r in range(WORLD)] if torch.cuda.is_available() else ["cpu"] * WORLD
    assert [r["device"] for r in rank_results] == expected_devices
    # without a process group everything is one process and gathers are the identity
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.init_distributed() is False
    assert not distributed.is_distributed() and distributed.world_size() == 1 and distributed.rank() == 0
    tensor = torch.randn(3, 2)
    assert distributed.gather_with_grad(tensor) is tensor and distributed.gather_no_grad(tensor) is tensor


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_each_rank_loss_and_gradient_equal_one_process_on_global_batch(rank_results, name):
    loss_class, kwargs, views, split = SCENARIOS[name]
    features = global_features(views).requires_grad_()
    loss_fn = loss_class(**kwargs)
    expected = loss_fn(features, LABELS)
    expected.backward()

    for rank, results in enumerate(rank_results):
        result, rows = results[name], rows_of(rank, split)
        torch.testing.assert_close(result["loss"], expected.detach(), rtol=1e-6, atol=1e-6)
        # the gather's backward sums the gradients of all WORLD identical losses; DDP then averages: ÷ WORLD
        torch.testing.assert_close(
            result["grad"] / WORLD, features.grad[rows], rtol=1e-5, atol=1e-6
        )
        for key, value in loss_fn.last_diagnostics.items():
            torch.testing.assert_close(result["diagnostics"][key], value)
        # without gathering each rank sees only its own rows: a different (local) loss
        local = loss_class(**kwargs, gather_distributed=False)(features.detach()[rows], LABELS[rows])
        torch.testing.assert_close(result["local_only"], local)
        assert not torch.isclose(result["local_only"], expected.detach())


@pytest.mark.parametrize("name", list(DDP_LOSSES))
def test_ddp_parameter_gradients_equal_one_process(rank_results, name):
    model = make_model()
    DDP_LOSSES[name]()(model(model_inputs()), LABELS).backward()
    for results in rank_results:
        for parameter, grad in results[f"ddp_{name}"].items():
            torch.testing.assert_close(grad, dict(model.named_parameters())[parameter].grad, rtol=1e-5, atol=1e-6)


def test_bad_values_on_one_rank_raise_on_every_rank(rank_results):
    assert all("NaN or Inf values (on this or another rank)" in r["bad_rank"] for r in rank_results)
