"""The offline choice of round 2 (recipes/autoscale_closeups/rule.txt): probe statistics of the tuning sets.

    python recipes/autoscale_closeups/offline.py dump DUMP.pt    # every 2nd image of grocery-real, fl27-train,
                                                                # synth-val and unseen (about a minute)
    python recipes/autoscale_closeups/offline.py table DUMP.pt   # the size-estimate shares per prior a

``dump`` stores, per image, the best score of every gallery view for every template size (4 ... 40 cells; above 20
cells on 2x2-pooled features at half the side, as ``pool_above`` 20 does) and, per class present, its views and its
true size in probe cells (the median box of the class; grocery-real: none, the product fills about the frame: 34
cells). ``table`` prints, for each prior a, the share of true-class estimates (template picked by score + a * ln(cells))
within 1.41x and 2x of the true size, and the median log error.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from cascade_probe import add_set_classes, load_set  # noqa: E402

from os2d.config import InferenceConfig  # noqa: E402
from os2d.detector import Detector  # noqa: E402
from os2d.inference.autoscale import probe_scores, resize_to_side  # noqa: E402
from os2d.inference.pyramid import prepare_levels  # noqa: E402
from os2d.io import load_image  # noqa: E402

CELLS = (4, 5, 7, 10, 14, 20, 28, 40)
SETS = ("grocery-real", "fl27-train", "synth-val", "unseen")
CLOSE_UP_CELLS = 34.0  # grocery-real: the product fills about the 768 probe's 48 cells


def probe_photos(set_names: tuple[str, ...]):
    """Every 2nd image of each set -> (set name, gallery, (1, C, H, W) features of the image at the probe size 768,
    [(true size in probe cells or None, (k,) indices of the class's gallery views) for each class present]). The true
    size is the median sqrt(area) of the class's boxes; grocery-real has none (its boxes are placeholders)."""
    for set_name in set_names:
        ds = load_set(set_name, Path.home() / "os2d-runs" / "synth-grocery-eval")
        det = Detector.from_weights("default")
        add_set_classes(det, ds)
        g = det.gallery
        for rec in ds.images[::2]:
            pil = load_image(rec.path)
            probe = resize_to_side(prepare_levels(pil, InferenceConfig())[0], 768)
            with torch.no_grad():
                feats = det.model.extract_features(probe[None])
            r = 768 / math.sqrt(pil.size[0] * pil.size[1])
            classes = []
            for c in sorted({int(x) for x in rec.labels}):
                size = None
                if set_name != "grocery-real":
                    b = torch.from_numpy(rec.boxes_xyxy[rec.labels == c])
                    size = float(((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).clamp(min=1).sqrt().median()) * r / 16
                classes.append((size, (g.view_class == c).nonzero().flatten()))
            yield set_name, g, feats, classes
        print(set_name, "done", flush=True)


def dump(out: Path) -> None:
    rows = []
    for set_name, g, feats, classes in probe_photos(SETS):
        peaks = probe_scores(feats, g.kernels, CELLS, pool_above=20)  # (V, T)
        rows += [{"set": set_name, "size": size, "peaks": peaks[views]} for size, views in classes]
    torch.save(rows, out)


def table(path: Path) -> None:
    rows = torch.load(path, weights_only=False)
    log_cells = torch.tensor(CELLS, dtype=torch.float32).log()
    for a in (0.0, 0.02, 0.04, 0.06, 0.08, 0.10, 0.12):
        parts = []
        for set_name in SETS:
            errs = []
            for r in (r for r in rows if r["set"] == set_name):
                j = int((r["peaks"] + a * log_cells[None]).max(0).values.argmax())
                true = CLOSE_UP_CELLS if r["size"] is None else max(r["size"], 1e-3)
                errs.append(math.log(CELLS[j] / true))
            e = torch.tensor(errs).abs()
            parts.append(f"{set_name}: {100 * (e < 0.35).float().mean():.0f}/{100 * (e < 0.7).float().mean():.0f}")
        print(f"a={a:.2f}  " + "  ".join(parts))


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("dump", "table"):
        sys.exit(__doc__)
    (dump if sys.argv[1] == "dump" else table)(Path(sys.argv[2]))
