"""Shared vs separate projection heads for the hybrid loss (and the single-term baselines), frozen-feature AUCs.

Pretrain on the embedded synthetic corpus (device-resident batched augmentation, SGD as train.json), then embed the
three synthetic downstream tasks and score 5-fold grouped CV logistic-regression and kNN AUCs on frozen features.

Usage (as run for docs/pretraining.md, one line appended to $HYBRID_MEASURE_DIR/results.jsonl per call):
    OMP_NUM_THREADS=1 python measure.py {scratch|mulsupcon|simclr|hybrid_shared|hybrid_separate} 48 16 30 SEED
TwoHead is the architecture of monai_modan.networks.HybridModel (two ContrastiveModel heads on one encoder).
"""
import json, os, sys, time, math
from pathlib import Path
import numpy as np
import torch
from torch import nn
from monai.optimizers import WarmupCosineSchedule
from monai_modan.synthetic import default_pretraining_datalist
from monai_modan.synthetic.defaults import default_task_datalist
from monai_modan.data.packed import open_or_pack
from monai_modan.transforms.batched import BatchedTwoViewAugment
from monai_modan.networks import ContrastiveModel, build_encoder
from monai_modan.losses import MulSupConLoss, NTXentLoss, HybridContrastiveLoss
from monai_modan.engines.inference import compute_embeddings
from monai_modan.evaluation.embedding import logistic_auc, knn_auc
from sklearn.model_selection import StratifiedGroupKFold

torch.set_num_threads(1)
ROOT = Path(os.environ.get("HYBRID_MEASURE_DIR", "/tmp/hybrid_measure"))  # work folder: corpus, packs, encoders
SIZE, PER_CLASS, EPOCHS, BATCH = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), 32


class TwoHead(nn.Module):
    def __init__(self, encoder):
        super().__init__()
        self.a = ContrastiveModel(encoder)
        self.encoder = encoder
        self.b = ContrastiveModel(encoder).projection
    def forward(self, x):
        h = self.encoder(x)
        return self.a.projection(h), self.b(h)


def train(config, seed):
    torch.manual_seed(seed)
    dl = default_pretraining_datalist(ROOT / f"corpus{SIZE}_{PER_CLASS}", images_per_class=PER_CLASS, image_size=SIZE)
    pack = open_or_pack(dl, ROOT / f"pack{SIZE}_{PER_CLASS}", SIZE)
    images = pack.to_device("cpu"); labels, _ = pack.targets_to_device("cpu")
    labels = labels.float()
    enc = build_encoder()
    model = TwoHead(enc) if config == "hybrid_separate" else ContrastiveModel(enc)
    loss = {"mulsupcon": MulSupConLoss(), "simclr": NTXentLoss(),
            "hybrid_shared": HybridContrastiveLoss(), "hybrid_separate": HybridContrastiveLoss(),
            "hybrid_shared_l0.5": HybridContrastiveLoss(instance_weight=0.5)}[config]
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    steps = len(images) // BATCH
    sched = WarmupCosineSchedule(opt, warmup_steps=steps, t_total=EPOCHS * steps)
    aug = BatchedTwoViewAugment(image_size=SIZE, num_views=2)
    gen = torch.Generator().manual_seed(seed)
    model.train(); t0 = time.time(); last = []
    for epoch in range(EPOCHS):
        order = torch.randperm(len(images), generator=gen)
        for s in range(steps):
            idx = order[s * BATCH:(s + 1) * BATCH]
            views = aug(images[idx], gen)
            x = views.reshape(-1, *views.shape[2:])
            out = model(x)
            if isinstance(out, tuple):
                f = out[0].reshape(BATCH, 2, -1); g = out[1].reshape(BATCH, 2, -1)
                l = loss(f, labels[idx], g)
            else:
                f = out.reshape(BATCH, 2, -1)
                l = loss(f, labels[idx]) if not isinstance(loss, NTXentLoss) else loss(f)
            opt.zero_grad(); l.backward(); opt.step(); sched.step()
            last.append(float(l))
    return enc, time.time() - t0, float(np.mean(last[-steps:]))


def evaluate(enc, seed):
    res = {}
    for task in ("breast_us", "thyroid_us", "knee_acl"):
        dl = default_task_datalist(task, ROOT / f"tasks{SIZE}", n_images=120, image_size=SIZE)
        items = json.loads(Path(dl).read_text())["training"]
        X = compute_embeddings(enc, items, image_size=SIZE)
        y = np.array([it["label"] for it in items]); g = np.array([it["group"] for it in items])
        lr, kn = [], []
        for tr, te in StratifiedGroupKFold(5, shuffle=True, random_state=0).split(X, y, g):
            lr.append(logistic_auc(X[tr], y[tr], X[te], y[te])); kn.append(knn_auc(X[tr], y[tr], X[te], y[te]))
        res[task] = {"logistic": float(np.mean(lr)), "knn": float(np.mean(kn))}
    return res


if __name__ == "__main__":
    config, seed = sys.argv[1], int(sys.argv[5]) if len(sys.argv) > 5 else 0
    if config == "scratch":
        torch.manual_seed(seed); enc, secs, final = build_encoder(), 0.0, float("nan")
    else:
        enc, secs, final = train(config, seed)
        torch.save(enc.state_dict(), ROOT / f"enc_{config}_{seed}.pt")
    r = evaluate(enc, seed)
    line = {"config": config, "seed": seed, "size": SIZE, "per_class": PER_CLASS, "epochs": EPOCHS,
            "train_s": round(secs, 1), "final_loss": final, **r}
    print(json.dumps(line))
    with open(ROOT / "results.jsonl", "a") as fh:
        fh.write(json.dumps(line) + "\n")
