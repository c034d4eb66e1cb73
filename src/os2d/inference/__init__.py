"""Inference: image pyramids (:mod:`~os2d.inference.pyramid`), the heads over them (:mod:`~os2d.inference.detect`),
decoding, class views merged and NMS (:mod:`~os2d.inference.decode`), the class shortlist
(:mod:`~os2d.inference.shortlist`). Import the submodules; this package imports nothing."""
