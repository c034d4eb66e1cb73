"""TransformNet pretraining without weakalign: strongly supervised regression of random affine warps of real
photos (the CNNGeometric recipe, Rocco et al. 2017), in the direction OS2D reads (class -> image).

The file it writes (``transform_net.pt``) is read by :mod:`os2d.train.transform_file` (training's ``init.transform``)."""

from os2d.pretrain.config import PretrainConfig, WarpConfig
from os2d.pretrain.evaluate import AlignmentReport, evaluate_alignment, format_table
from os2d.pretrain.grid_loss import grid_distance, grid_loss, grid_points
from os2d.pretrain.pairs import PairSet, list_photos, make_pairs
from os2d.pretrain.trainer import pretrain_transform

__all__ = [
    "AlignmentReport",
    "PairSet",
    "PretrainConfig",
    "WarpConfig",
    "evaluate_alignment",
    "format_table",
    "grid_distance",
    "grid_loss",
    "grid_points",
    "list_photos",
    "make_pairs",
    "pretrain_transform",
]
