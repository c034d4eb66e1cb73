"""Running detection over many images: discovery, background decoding, JSONL results, resume, sharding."""

from os2d.runner.discover import IMAGE_EXTENSIONS, discover_images
from os2d.runner.folder import ImageResult, RunSummary, Shard, iter_detections, run_to_jsonl
from os2d.runner.prefetch import Prepared, prefetched
from os2d.runner.results import (
    JsonlContents,
    JsonlWriter,
    find_shards,
    make_header,
    merge_shards,
    read_jsonl,
    shard_path,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageResult",
    "JsonlContents",
    "JsonlWriter",
    "Prepared",
    "RunSummary",
    "Shard",
    "discover_images",
    "find_shards",
    "iter_detections",
    "make_header",
    "merge_shards",
    "prefetched",
    "read_jsonl",
    "run_to_jsonl",
    "shard_path",
]
