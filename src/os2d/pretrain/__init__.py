"""TransformNet pretraining without weakalign: strongly supervised regression of random affine warps of real
photos (the CNNGeometric recipe, Rocco et al. 2017), in the direction OS2D reads (class -> image)."""

from os2d.pretrain.config import PretrainConfig, WarpConfig
from os2d.pretrain.evaluate import AlignmentReport, evaluate_alignment, format_table
from os2d.pretrain.grid_loss import grid_distance, grid_loss, grid_points
from os2d.pretrain.pairs import PairSet, list_photos, make_pairs
from os2d.pretrain.trainer import pretrain_transform
from os2d.pretrain.transform_file import (
    TRANSFORM_KIND,
    load_transform_net,
    read_transform_file,
    save_transform_net,
)

__all__ = [
    "AlignmentReport",
    "PairSet",
    "PretrainConfig",
    "TRANSFORM_KIND",
    "WarpConfig",
    "evaluate_alignment",
    "format_table",
    "grid_distance",
    "grid_loss",
    "grid_points",
    "list_photos",
    "load_transform_net",
    "make_pairs",
    "pretrain_transform",
    "read_transform_file",
    "save_transform_net",
]
