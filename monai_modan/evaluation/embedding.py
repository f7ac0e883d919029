"""Embedding views of pretrained encoders: UMAP panels coloured by (modality, anatomy), and frozen-feature
classifiers (kNN, logistic regression).

The panels answer the paper's qualitative question -- does the encoder organise images by modality and anatomy
-- so every panel of every run must use the same colour for the same pair: colours come from the sorted list of
all pairs shown, never from the order in which points or panels arrive.
"""

from __future__ import annotations

import colorsys
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ..utils.io import atomic_path
from .stats import fold_auc

__all__ = ["UNKNOWN", "pair_colours", "UmapPanels", "umap_panels", "knn_auc", "logistic_auc"]

UNKNOWN = "unknown"  # shown for a missing modality or anatomy (None, "" or NaN)

Pair = tuple[str, str]
RGBA = tuple[float, float, float, float]


def _label(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or str(value) == "":
        return UNKNOWN
    return str(value)


def pair_colours(pairs: Iterable[Sequence[object]]) -> dict[Pair, RGBA]:
    """A fixed colour per (modality, anatomy) pair: the i-th pair of the sorted distinct pairs gets colour i.

    Colours 0-59 are matplotlib's qualitative ``tab20``, ``tab20b``, ``tab20c``; beyond, hues step by the golden
    angle. The same set of pairs always gives the same map, whatever the order or repetition of the input.
    """
    # lazy: matplotlib is imported only when a figure is drawn
    from matplotlib import colormaps

    palette = [colormaps[name](i) for name in ("tab20", "tab20b", "tab20c") for i in range(20)]
    keys = sorted({(_label(p[0]), _label(p[1])) for p in pairs})
    out: dict[Pair, RGBA] = {}
    for i, key in enumerate(keys):
        if i < len(palette):
            out[key] = tuple(float(c) for c in palette[i])
        else:
            hue = ((i - len(palette)) * 0.618033988749895) % 1.0
            out[key] = (*colorsys.hsv_to_rgb(hue, 0.75, 0.85), 1.0)
    return out


@dataclass
class UmapPanels:
    """What :func:`umap_panels` drew: the PNG, the colour of each pair, the ``[N, 2]`` UMAP coordinates per init."""

    path: Path
    colours: dict[Pair, RGBA]
    coords: dict[str, np.ndarray]


def _check_embedding(name: str, value: Sequence) -> tuple[np.ndarray, list[Pair]]:
    if not isinstance(value, (tuple, list)) or len(value) != 3:
        raise ValueError(f"embeddings[{name!r}] must be a tuple (X [N, F], modality [N], anatomy [N])")
    x, modality, anatomy = value
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 4:
        raise ValueError(f"embeddings[{name!r}]: X must be [N, F] with N >= 4, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"embeddings[{name!r}]: X has {int((~np.isfinite(x)).sum())} non-finite values")
    modality, anatomy = list(modality), list(anatomy)
    if len(modality) != x.shape[0] or len(anatomy) != x.shape[0]:
        raise ValueError(f"embeddings[{name!r}]: {x.shape[0]} rows but {len(modality)} modalities and "
                         f"{len(anatomy)} anatomies")
    return x, [(_label(m), _label(a)) for m, a in zip(modality, anatomy)]


def umap_panels(embeddings: Mapping[str, tuple[np.ndarray, Sequence[object], Sequence[object]]],
                out_png: str | Path, seed: int = 0, *, n_neighbors: int = 15, min_dist: float = 0.1,
                metric: str = "cosine", panel_size: float = 4.0) -> UmapPanels:
    """One UMAP panel per initialisation, points coloured by their (modality, anatomy) pair, one shared legend.

    Each init's features are embedded separately with ``umap.UMAP(n_neighbors=min(n_neighbors, N - 1),
    min_dist, metric, random_state=seed)`` (single-threaded, hence reproducible). Cosine distance by default:
    contrastive features are compared by angle. Points are drawn in a seeded random order so that no pair
    hides the others.

    Args:
        embeddings: init name -> ``(X [N, F], modality [N], anatomy [N])``; a missing label shows as ``unknown``.
        out_png: the figure, written atomically.
        seed: UMAP ``random_state`` and drawing order.

    Returns:
        :class:`UmapPanels` with the colour map used and the coordinates.
    """
    # lazy: UMAP (numba) and matplotlib are heavy and needed only to draw
    import umap
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    if not embeddings:
        raise ValueError("no embeddings to draw")
    data = {name: _check_embedding(name, value) for name, value in embeddings.items()}
    colours = pair_colours(p for _, pairs in data.values() for p in pairs)
    coords: dict[str, np.ndarray] = {}
    for name, (x, _) in data.items():
        reducer = umap.UMAP(n_neighbors=min(int(n_neighbors), x.shape[0] - 1), min_dist=min_dist, metric=metric,
                            random_state=int(seed), n_jobs=1)
        with warnings.catch_warnings():  # tiny inputs: spectral init may fall back to random init, which is fine
            warnings.simplefilter("ignore", UserWarning)
            coords[name] = np.asarray(reducer.fit_transform(x), dtype=np.float64)

    n = len(data)
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(panel_size * ncols, panel_size * nrows), dpi=100)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, (name, (_, pairs)) in zip(axes.flat, data.items()):
        xy = coords[name]
        order = np.random.default_rng(int(seed)).permutation(len(pairs))
        ax.scatter(xy[order, 0], xy[order, 1], c=[colours[pairs[i]] for i in order], s=8, linewidths=0)
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[n:]:
        ax.set_axis_off()
    handles = [Line2D([], [], ls="", marker="o", color=c, label=f"{m} / {a}") for (m, a), c in colours.items()]
    fig.legend(handles=handles, title="modality / anatomy", loc="center left", bbox_to_anchor=(1.0, 0.5),
               ncols=max(1, math.ceil(len(handles) / 30)), fontsize="small", frameon=False)
    fig.tight_layout()
    out_png = Path(out_png)
    with atomic_path(out_png, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    return UmapPanels(path=out_png, colours=colours, coords=coords)


def _frozen_feature_inputs(train_X, train_y, test_X, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(train_X, train_y, test_X)`` as float64 / int64 arrays, checked: ``[N, F]`` features with the same F, one
    0/1 label per training row, both classes present."""
    train_X, test_X = np.asarray(train_X, dtype=np.float64), np.asarray(test_X, dtype=np.float64)
    train_y = np.asarray(train_y)
    if train_X.ndim != 2 or test_X.ndim != 2 or train_X.shape[1] != test_X.shape[1]:
        raise ValueError(f"{what} needs [N, F] features with the same F, got {train_X.shape} and {test_X.shape}")
    if train_y.shape != (train_X.shape[0],):
        raise ValueError(f"train_y has shape {train_y.shape} for {train_X.shape[0]} training rows")
    if set(np.unique(train_y).tolist()) != {0, 1}:
        raise ValueError(f"{what} training labels must hold both classes 0 and 1, found "
                         f"{sorted(set(train_y.tolist()))}")
    return train_X, train_y.astype(np.int64), test_X


def knn_auc(train_X: np.ndarray, train_y: Sequence[int] | np.ndarray, test_X: np.ndarray,
            test_y: Sequence[int] | np.ndarray, k: int = 20) -> float:
    """Test AUC of a k-nearest-neighbour classifier on frozen features (cosine distance, uniform votes).

    ``sklearn.neighbors.KNeighborsClassifier(n_neighbors=min(k, N_train), metric="cosine")``; the score of a test
    image is the fraction of its neighbours in class 1 (``predict_proba``), ranked by :func:`fold_auc`.

    Args:
        train_X: ``[N_train, F]`` features; ``train_y``: ``[N_train]`` 0/1 labels holding both classes.
        test_X: ``[N_test, F]`` features; ``test_y``: ``[N_test]`` 0/1 labels holding both classes.
    """
    train_X, train_y, test_X = _frozen_feature_inputs(train_X, train_y, test_X, "kNN")
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    knn = KNeighborsClassifier(n_neighbors=min(int(k), train_X.shape[0]), metric="cosine")
    knn.fit(train_X, train_y)
    score = knn.predict_proba(test_X)[:, list(knn.classes_).index(1)]
    return fold_auc(test_y, score)


def logistic_auc(train_X: np.ndarray, train_y: Sequence[int] | np.ndarray, test_X: np.ndarray,
                 test_y: Sequence[int] | np.ndarray, c: float = 1.0) -> float:
    """Test AUC of an L2-regularised logistic regression on standardised frozen features.

    The usual linear evaluation of self-supervised features (a convex fit to convergence, as in SimCLR's transfer
    experiments), *not* the ModAn paper's linear probe (a linear layer trained by Adam at lr 1e-4 for 10 epochs,
    which on unnormalised features hardly leaves its random start): it measures the features, not a training
    budget. ``sklearn`` pipeline ``StandardScaler()`` (mean and sd of the training rows) then
    ``LogisticRegression(C=c, solver="lbfgs")`` (deterministic); a test image's score is its class-1 probability.

    Args:
        train_X: ``[N_train, F]`` features; ``train_y``: ``[N_train]`` 0/1 labels holding both classes.
        test_X: ``[N_test, F]`` features; ``test_y``: ``[N_test]`` 0/1 labels holding both classes.
        c: inverse L2 strength (sklearn's ``C``): the penalty is ``||w||^2 / (2 c)`` against the summed log-loss.
    """
    train_X, train_y, test_X = _frozen_feature_inputs(train_X, train_y, test_X, "logistic regression")
    if not (math.isfinite(c) and c > 0):
        raise ValueError(f"c must be > 0, got {c}")
    model = make_pipeline(StandardScaler(), LogisticRegression(C=float(c), solver="lbfgs", max_iter=10_000))
    model.fit(train_X, train_y)
    return fold_auc(test_y, model.predict_proba(test_X)[:, list(model.classes_).index(1)])
