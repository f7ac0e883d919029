"""Frozen encoder diagnostics on the pretraining corpus: instance retrieval (top-1 of the partner view among all other
views, cosine, 2 fresh augmented views per image) and 1-NN accuracy of the (modality, anatomy) pair among the views of the other images."""
import json, os, sys
from pathlib import Path
import numpy as np, torch
from monai_modan.networks import build_encoder
from monai_modan.data.packed import PackedCorpus
from monai_modan.transforms.batched import BatchedTwoViewAugment
torch.set_num_threads(1)
ROOT = Path(os.environ.get("HYBRID_MEASURE_DIR", "/tmp/hybrid_measure"))  # work folder: corpus, packs, encoders
pack = PackedCorpus.open(ROOT / "pack48_16")
images = pack.to_device("cpu"); labels, _ = pack.targets_to_device("cpu")
pairs = [tuple(np.flatnonzero(r).tolist()) for r in labels.numpy()]
codes = {p: i for i, p in enumerate(sorted(set(pairs)))}; y = np.array([codes[p] for p in pairs])
views = BatchedTwoViewAugment(image_size=48, num_views=2)(images, torch.Generator().manual_seed(123))
for name in sys.argv[1:]:
    enc = build_encoder()
    if name != "scratch":
        enc.load_state_dict(torch.load(ROOT / f"enc_{name}.pt", weights_only=True))
    else:
        torch.manual_seed(0); enc = build_encoder()
    enc.eval()
    with torch.no_grad():
        f = torch.cat([enc(views[i:i + 64].reshape(-1, 1, 48, 48)) for i in range(0, len(views), 64)])
    z = torch.nn.functional.normalize(f, dim=1); s = z @ z.T; s.fill_diagonal_(-2)
    n = len(images); partner = torch.arange(2 * n) ^ 1  # rows image-major: b*2+v
    retrieval = float((s.argmax(1) == partner).float().mean())
    s2 = s.clone(); s2[torch.arange(2 * n), partner] = -2  # neighbours among the views of *other* images
    yv = np.repeat(y, 2)
    nn1 = float((yv[s2.argmax(1).numpy()] == yv).mean())
    print(json.dumps({"encoder": name, "instance_top1": round(retrieval, 3), "pair_1nn": round(nn1, 3)}))
