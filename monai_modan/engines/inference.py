"""Embeddings of a datalist with a pretrained encoder (bundle ``inference.json``, UMAP panels, kNN, linear probes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from monai.data import DataLoader, Dataset
from monai.transforms import Compose, EnsureTyped
from torch import nn

from ..data.datalist import Datalist
from ..data.readers import LoadGrayscaleImaged
from ..utils.defaults import IMAGE_SIZE
from ..utils.io import atomic_path

__all__ = ["compute_embeddings", "embed_datalist"]


@torch.no_grad()
def compute_embeddings(encoder: nn.Module, items: list[dict], image_size: int = IMAGE_SIZE, batch_size: int = 64,
                       device: str | torch.device = "cpu", num_workers: int = 0) -> np.ndarray:
    """``[N, F]`` float32 penultimate features (F = 512 for ResNet-18) of ``items`` (``{"image": path}`` dicts).

    Images go through the same loading path as training (grey, [0, 1], ``image_size``²) without augmentation; the
    encoder runs in eval mode (BatchNorm running statistics).
    """
    if not items:
        raise ValueError("no images to embed (empty split)")
    transform = Compose([LoadGrayscaleImaged(keys="image", spatial_size=image_size), EnsureTyped(keys="image", track_meta=False)])
    loader = DataLoader(Dataset([{"image": it["image"]} for it in items], transform), batch_size=batch_size,
                        shuffle=False, num_workers=num_workers)
    encoder = encoder.to(device).eval()
    out = [encoder(batch["image"].to(device)).float().cpu() for batch in loader]
    return torch.cat(out).numpy()


def embed_datalist(encoder: nn.Module, data: Datalist, output_file: str | Path, split: str = "training",
                   image_size: int = IMAGE_SIZE, batch_size: int = 64, device: str | torch.device = "cpu") -> Path:
    """Write ``output_file`` (.npz, atomically): ``embeddings [N, F]``, ``labels [N, K]``, ``images [N]``, and one
    ``[N]`` string array per label group (``modality``, ``anatomy`` ...; "" when unknown)."""
    items = data.items(split)
    emb = compute_embeddings(encoder, items, image_size=image_size, batch_size=batch_size, device=device)
    arrays = {
        "embeddings": emb,
        "labels": np.asarray([it["label"] for it in items], dtype=np.float32),
        "images": np.asarray([str(it["image"]) for it in items]),
        "class_names": np.asarray(data.space.class_names),
    }
    for group in data.space.names:
        arrays[group] = np.asarray([it.get(group) or "" for it in items])
    output_file = Path(output_file)
    with atomic_path(output_file, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)
    return output_file
