"""Detection over many images: background decoding, streamed JSONL results, resume, torchrun sharding."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from os2d.detector import Detector
from os2d.inference.pyramid import prepare_levels
from os2d.io import load_image
from os2d.results import Detections, image_record, jsonl_header
from os2d.runner.discover import path_key
from os2d.runner.identity import gallery_digest
from os2d.runner.prefetch import prefetched
from os2d.runner.results import JsonlWriter
from os2d.weights import model_fingerprint

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shard:
    """This process's share of a multi-process run: images ``i`` with ``i % world_size == rank``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(f"bad shard: rank {self.rank} of world size {self.world_size}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Shard:
        """From ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (set by ``torchrun``); one process when absent."""
        env = os.environ if env is None else env
        try:
            world = int(env.get("WORLD_SIZE", "1"))
            rank = int(env.get("RANK", "0"))
            local = int(env.get("LOCAL_RANK", str(rank)))
        except ValueError as e:
            raise ValueError(f"RANK/WORLD_SIZE/LOCAL_RANK must be integers: {e}") from e
        return cls(rank, world, local)

    def select(self, items: Sequence[str]) -> list[str]:
        return list(items[self.rank :: self.world_size])

    def device(self, requested: str) -> str:
        """``cuda``/``auto`` -> ``cuda:LOCAL_RANK`` when CUDA is available (one GPU per process); ``auto`` without
        CUDA -> ``cpu``; anything else unchanged."""
        if requested in ("cuda", "auto") and torch.cuda.is_available():
            return f"cuda:{self.local_rank % torch.cuda.device_count()}"
        return "cpu" if requested == "auto" else requested


@dataclass
class ImageResult:
    """The outcome for one image: ``detections`` or ``error``; ``image`` is kept only when asked for."""

    path: str
    detections: Detections | None
    error: str | None
    size: tuple[int, int] | None = None
    image: Image.Image | None = None
    decode_s: float = 0.0
    detect_s: float = 0.0

    def record(self) -> dict[str, Any]:
        """The IMAGE record of the output contract (:func:`os2d.results.image_record`)."""
        return image_record(self.path, self.size, self.detections, error=self.error)


@dataclass
class _Loaded:
    levels: list[torch.Tensor]
    size: tuple[int, int]
    image: Image.Image | None


def iter_detections(detector: Detector, paths: Sequence[str], *, workers: int = 2, depth: int = 4,
                    keep_images: bool = False) -> Iterator[ImageResult]:
    """Detect in each image, in order; decoding and resizing run ``depth`` images ahead in ``workers`` threads.

    Results equal ``detector.detect(path)`` for every path (bad images give ``ImageResult.error``).
    ``workers=0``: decode in this thread, no overlap (the simple path).
    """
    config = detector.config
    pin = detector.device.type == "cuda"

    def load(path: str) -> _Loaded:
        img = load_image(path)
        levels = prepare_levels(img, config)
        if pin:
            levels = [lv.pin_memory() for lv in levels]  # lets the copy to the GPU overlap
        return _Loaded(levels, img.size, img if keep_images else None)

    for item in prefetched(paths, load, workers=workers, depth=depth):
        if item.error is not None or item.value is None:
            yield ImageResult(item.item, None, item.error or "unknown error", decode_s=item.seconds)
            continue
        t0 = time.perf_counter()
        dets = detector.detect_pyramid(item.value.levels, item.value.size)
        yield ImageResult(item.item, dets, None, item.value.size, item.value.image, item.seconds,
                          time.perf_counter() - t0)


@dataclass
class RunSummary:
    """What :func:`run_to_jsonl` did."""

    path: Path
    total: int  # images of this shard
    skipped: int  # already in the file (resumed)
    processed: int = 0
    failed: int = 0
    detections: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)  # error messages of this run

    @property
    def images_per_s(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else float("nan")


def run_to_jsonl(detector: Detector, paths: Sequence[str], output: str | Path, *, weights: str = "",
                 class_images: str | None = None, resume: bool = True, retry_errors: bool = False,
                 shard: Shard | None = None, workers: int = 2, depth: int = 4,
                 on_result: Callable[[ImageResult], None] | None = None,
                 progress: Callable[[int, int], Any] | None = None) -> RunSummary:
    """Detect in this shard's images and append one JSON line per image to ``output``.

    The header records the weights name and, by content, the model (:func:`os2d.weights.model_fingerprint`)
    and the class images; a resumed file must agree on content, classes, options and shard
    (:func:`os2d.runner.results.check_compatible`).

    Args:
        paths: all input images of the run (every rank passes the same list).
        output: this process's file (use :func:`os2d.runner.results.shard_path` for a rank's file).
        weights: name recorded in the header (information only: the model is compared by its fingerprint).
        class_images: digest of the class images (:func:`os2d.runner.identity.class_images_digest`); None:
            a digest of the gallery's kernels (:func:`os2d.runner.identity.gallery_digest`).
        resume: skip the images already recorded in ``output`` (errors too unless ``retry_errors``); an image
            is recognised by its resolved absolute path (:func:`os2d.runner.discover.path_key`), whatever the
            spelling; records keep the path as given.
        shard: this process's share (default: all images).
        on_result: called with every new result (e.g. to draw it).
        progress: ``progress(total, skipped)`` returns an object with ``update(n)`` (e.g. a tqdm factory).
    """
    shard = shard or Shard()
    mine = shard.select(paths)
    config = {k: v for k, v in asdict(detector.config).items() if k != "class_chunk"}  # class_chunk: memory only
    header = jsonl_header(detector.classes, weights=weights, config=config,
                          shard=(shard.rank, shard.world_size) if shard.world_size > 1 else None)
    header["model"] = model_fingerprint(detector.model)
    header["class_images"] = gallery_digest(detector.gallery) if class_images is None else class_images
    with JsonlWriter(output, header, resume=resume) as writer:
        done = {path_key(p) for p, r in writer.existing.latest().items() if not retry_errors or "error" not in r}
        todo = [p for p in mine if path_key(p) not in done]
        summary = RunSummary(Path(output), total=len(mine), skipped=len(mine) - len(todo))
        if writer.existing.partial_tail:
            logger.warning("%s: ignored a partial last line (interrupted write)", output)
        bar = progress(len(mine), summary.skipped) if progress else None
        t0 = time.perf_counter()
        for res in iter_detections(detector, todo, workers=workers, depth=depth, keep_images=on_result is not None):
            writer.write(res.record())
            summary.processed += 1
            if res.error is not None:
                summary.failed += 1
                summary.failures.append(res.error)
            else:
                summary.detections += len(res.detections or [])
            if on_result is not None:
                on_result(res)
            if bar is not None:
                bar.update(1)
        summary.seconds = time.perf_counter() - t0
        if bar is not None and hasattr(bar, "close"):
            bar.close()
    return summary
