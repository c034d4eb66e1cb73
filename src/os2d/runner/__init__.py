"""Running detection over many images: discovery, background decoding, JSONL results, resume, sharding.

The file format (records, header, reader) is :mod:`os2d.results`.
"""

from os2d.runner.discover import IMAGE_EXTENSIONS, discover_images
from os2d.runner.folder import ImageResult, RunSummary, Shard, iter_detections, run_to_jsonl
from os2d.runner.prefetch import Prepared, prefetched
from os2d.runner.results import JsonlWriter, find_shards, merge_shards, shard_path

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageResult",
    "JsonlWriter",
    "Prepared",
    "RunSummary",
    "Shard",
    "discover_images",
    "find_shards",
    "iter_detections",
    "merge_shards",
    "prefetched",
    "run_to_jsonl",
    "shard_path",
]
