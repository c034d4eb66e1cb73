"""``ServiceSettings``: the options of ``os2d serve`` (and of :func:`os2d.apps.service.app.create_app`), checked."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from os2d.config import BACKBONE_PRECISIONS, HEADS_PRECISIONS, InferenceConfig

MB = 1024 * 1024


def default_data_dir() -> Path:
    env = os.environ.get("OS2D_DATA")
    return Path(env).expanduser() if env else Path.home() / ".local" / "share" / "os2d"


@dataclass(frozen=True)
class ServiceSettings:
    """Settings of the service (``os2d serve`` options)."""

    weights: str = "default"
    data_dir: Path = field(default_factory=default_data_dir)
    token: str | None = None
    max_upload_mb: float = 20.0
    max_pixels: int = 40_000_000
    queue_size: int = 4  # requests waiting or running in the inference worker; more -> 503
    timeout_s: float = 60.0  # per request, waiting included; longer -> 503
    device: str = "cpu"
    torch_threads: int | None = None  # torch.set_num_threads, only when given
    max_batch: int = 16
    shortlist_top_k: int | None = None  # InferenceConfig.shortlist_top_k: heads only for the K best-ranked classes
    heads_precision: str = InferenceConfig.heads_precision  # "int8-exact" (the library's default), "fp32" or "int8"
    trunk_precision: str | None = None  # InferenceConfig.trunk_precision: "bf16" photo backbone; None: library default
    verify_precision: str | None = None  # InferenceConfig.verify_precision: "bf16" second-look crops; None: likewise
    colour_rescore: float = 0.0  # InferenceConfig.colour_rescore: > 0 multiplies scores by a colour agreement
    verify_rescore: float | None = None  # InferenceConfig.verify_rescore (the second look); None: the library's default
    refine_top: int | None = None  # InferenceConfig.refine_top (zoomed re-localisation); None: the library's default
    reshape_top: int | None = None  # InferenceConfig.reshape_top (the second look's shape search); None: likewise
    verify_size: int | None = None  # InferenceConfig.verify_size (the second look's crop side); None: likewise
    verify_rivals: float | None = None  # InferenceConfig.verify_rivals (look-alikes of other classes); None: likewise
    verify_colour: float | None = None  # InferenceConfig.verify_colour (colour in the rivals); None: likewise
    verify_colour_margin: float | None = None  # InferenceConfig.verify_colour_margin (>= 1); None: likewise
    verify_chroma: float | None = None  # InferenceConfig.verify_chroma (chromatic colour, in [0, 1]); None: likewise

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir).expanduser())
        if self.queue_size < 1:
            raise ValueError("queue_size must be >= 1")
        if self.shortlist_top_k is not None and self.shortlist_top_k < 1:
            raise ValueError("shortlist_top_k must be >= 1 or None")
        if self.heads_precision not in HEADS_PRECISIONS:
            raise ValueError(f"heads_precision must be one of {HEADS_PRECISIONS}, got {self.heads_precision!r}")
        for key in ("trunk_precision", "verify_precision"):
            if getattr(self, key) not in (None, *BACKBONE_PRECISIONS):
                raise ValueError(f"{key} must be 'fp32' or 'bf16', got {getattr(self, key)!r}")
        if not (math.isfinite(self.colour_rescore) and self.colour_rescore >= 0):
            raise ValueError(f"colour_rescore must be a finite number >= 0 (0: off), got {self.colour_rescore}")
        if self.verify_rescore is not None and not (math.isfinite(self.verify_rescore) and self.verify_rescore >= 0):
            raise ValueError(f"verify_rescore must be a finite number >= 0 (0: off), got {self.verify_rescore}")
        for key in ("refine_top", "reshape_top"):
            if getattr(self, key) is not None and getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0 (0: off), got {getattr(self, key)}")
        if self.verify_size is not None and self.verify_size < 16:
            raise ValueError(f"verify_size must be at least 16 pixels, got {self.verify_size}")
        if self.verify_rivals is not None and not (math.isfinite(self.verify_rivals) and self.verify_rivals >= 0):
            raise ValueError(f"verify_rivals must be a finite number >= 0 (0: off), got {self.verify_rivals}")
        if self.verify_colour is not None and not (math.isfinite(self.verify_colour) and self.verify_colour >= 0):
            raise ValueError(f"verify_colour must be a finite number >= 0 (0: off), got {self.verify_colour}")
        if self.verify_colour_margin is not None and not self.verify_colour_margin >= 1:
            raise ValueError(f"verify_colour_margin must be >= 1, got {self.verify_colour_margin}")
        if self.verify_chroma is not None and not (math.isfinite(self.verify_chroma) and 0 <= self.verify_chroma <= 1):
            raise ValueError(f"verify_chroma must be in [0, 1] (0: off), got {self.verify_chroma}")
        if self.max_upload_mb <= 0 or self.max_pixels <= 0 or self.timeout_s <= 0:
            raise ValueError("max_upload_mb, max_pixels and timeout_s must be positive")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MB)
