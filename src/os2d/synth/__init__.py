"""Synthetic one-shot detection data: class images composited onto real photos as shelves or scattered objects,
written in os2d's simple CSV format (``os2d synth``)."""

from os2d.synth.compose import Annotation, Scene
from os2d.synth.config import SynthConfig
from os2d.synth.preview import draw_annotations, preview_grid
from os2d.synth.writer import Sample, generate_dataset, generate_sample

__all__ = [
    "Annotation",
    "Sample",
    "Scene",
    "SynthConfig",
    "draw_annotations",
    "generate_dataset",
    "generate_sample",
    "preview_grid",
]
