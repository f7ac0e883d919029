"""Benchmarks, one module per claim; each measures its baseline in the same process and reports the ratio.

- :mod:`~monai_modan.benchmarks.loss`: MulSupCon forward+backward vs the authors' per-pair loop and
  pytorch-metric-learning's ``SupConLoss``;
- :mod:`~monai_modan.benchmarks.pretrain`: the fast path's per-step overhead over forward+backward, and its epoch
  throughput vs an authors'-style ``DataLoader`` loop;
- :mod:`~monai_modan.benchmarks.index`: the parallel cached DICOM header indexer vs a naive full-read loop;
- :mod:`~monai_modan.benchmarks.cv`: the cross-validation protocol with concurrent fine-tuning workers vs serially.

Run ``python -m monai_modan.benchmarks {loss,pretrain,index,cv} [--json] [--device cpu|cuda] [--size N]``; every
``run(...)`` returns the result dict described in :mod:`~monai_modan.benchmarks.common`. Results on the reference
machines are in ``docs/benchmarks.md``.
"""

from __future__ import annotations

__all__ = ["common", "cv", "index", "loss", "pretrain"]
