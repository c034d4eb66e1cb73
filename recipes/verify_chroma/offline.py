"""The offline choice of recipes/verify_chroma (and the floor check of recipes/verify_chroma_floor): the default's
detections on the tuning sets with each detection's crop colour histogram, then mAP@0.5 with the chromatic factor
``max(floor, min(1, s_c / t)) ** g`` (mass floor mu) re-scoring them, against no factor.

    python recipes/verify_chroma/offline.py dump ~/os2d-runs/c32/dump.pt --sets synth-val unseen fl27-train  # ~8 min
    python recipes/verify_chroma/offline.py grid ~/os2d-runs/c32/dump.pt            # the rule's 36 points, seconds
    python recipes/verify_chroma/offline.py grid ~/os2d-runs/c32/dump.pt --t 0.5 --g 1 --mu 0.3 --floors 0.1 0.25 0.5

Run the dump with the factor off (``verify_chroma`` 0: the default before the rule); the crop histograms are read
from the original photo inside each final detection's parallelogram.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from default_arms import run_arms  # noqa: E402

from os2d.detector import Detector  # noqa: E402
from os2d.evaluation.metrics import evaluate_detections  # noqa: E402
from os2d.inference.colour import apply_score_factors, chromatic_similarity  # noqa: E402
from os2d.inference.verify import crop_colours  # noqa: E402
from os2d.io import image_to_tensor, load_image  # noqa: E402


def dump(out: Path, sets: list[str]) -> None:
    data = {}
    for name in sets:
        det = Detector.from_weights("default", verify_chroma=0.0)
        runs = run_arms(name, {"off": {}}, detector=det)
        g = det.gallery
        per = []
        for rec, d in zip(runs.images, runs.detections["off"], strict=True):
            image = image_to_tensor(load_image(rec.path))  # (3, H, W) in [0, 1]
            per.append({"det": d, "colours": crop_colours(image, d.corners_xy.float(), d.labels, g.view_class,
                                                         g.view_aspect)})
        data[name] = {"names": runs.class_names, "images": runs.images, "per": per,
                      "view_colour": g.view_colour.clone(), "view_class": g.view_class.clone()}
        print(name, f"mAP@0.5 {runs.metrics('off')[0]:.2f}", flush=True)
    torch.save(data, out)


def mean_ap(data: dict, t: float, g: float, mu: float, floor: float) -> dict[str, float]:
    """mAP@0.5 per set with the factor (t = 0: none)."""
    out = {}
    for name, d in data.items():
        dets = []
        for p in d["per"]:
            det = p["det"]
            if len(det) == 0 or t == 0:
                dets.append(det)
                continue
            sims = chromatic_similarity(p["colours"], torch.nan_to_num(d["view_colour"].float(), nan=-1.0), mu)
            own = d["view_class"].view(1, -1) == det.labels.view(-1, 1)
            best = sims.nan_to_num(-1.0).masked_fill(~own, -1.0).amax(dim=1)
            factor = torch.where(best < 0, torch.ones_like(best), (best / t).clamp(min=floor, max=1.0) ** g)
            dets.append(apply_score_factors(det, factor))
        out[name] = 100 * evaluate_detections(dets, d["images"], len(d["names"]), 0.5, False,
                                              class_names=d["names"]).map
    return out


def grid(path: Path, ts: list[float], gs: list[float], mus: list[float], floors: list[float]) -> None:
    data = torch.load(path, weights_only=False)
    base = mean_ap(data, 0.0, 1.0, 0.0, 0.0)
    print("no factor:", {k: round(v, 2) for k, v in base.items()})
    for t, g, mu, floor in itertools.product(ts, gs, mus, floors):
        d = {k: v - base[k] for k, v in mean_ap(data, t, g, mu, floor).items()}
        print(f"t={t} g={g} mu={mu} floor={floor}: " + " ".join(f"{k} {v:+.2f}" for k, v in d.items())
              + f" | mean {sum(d.values()) / len(d):+.2f} min {min(d.values()):+.2f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=("dump", "grid"))
    ap.add_argument("path", type=Path)
    ap.add_argument("--sets", nargs="+", default=["synth-val", "unseen", "fl27-train"])
    ap.add_argument("--t", type=float, nargs="+", default=[0.5, 0.6, 0.7, 0.8])
    ap.add_argument("--g", type=float, nargs="+", default=[1, 2, 4])
    ap.add_argument("--mu", type=float, nargs="+", default=[0.05, 0.15, 0.3])
    ap.add_argument("--floors", type=float, nargs="+", default=[0.0])
    args = ap.parse_args()
    if args.command == "dump":
        dump(args.path, args.sets)
    else:
        grid(args.path, args.t, args.g, args.mu, args.floors)


if __name__ == "__main__":
    main()
