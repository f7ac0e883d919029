"""Defaults shared across layers, each in one place.

A value used by one class only lives in that class's signature or dataclass (``Recipe``, ``TwoViewRecipe``, the
losses' temperatures); this module holds the ones several layers must agree on.
"""

from __future__ import annotations

__all__ = ["IMAGE_SIZE"]

# Image side in pixels of the embedded demo, the synthetic data and CI (CPU-sized); the ModAn paper used 224.
IMAGE_SIZE = 64
