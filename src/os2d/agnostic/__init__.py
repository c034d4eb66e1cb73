"""Class-agnostic detector ("is there an object here, and where") of the detector + retrieval baseline
(paper Sec. 6.2), trained on cached frozen features of an OS2D model's trunk.

Modules, in pipeline order: ``config`` (typed configs), ``cache`` (trunk features stored once per training
image), ``head`` (the dense objectness / box head), ``targets`` (assignment + loss terms), ``weights`` (the detector
file), ``proposals`` (inference: boxes of one image), ``retrieval`` (GeM embeddings, whitening). The training
loop and the whitening fit are :mod:`os2d.train.detector_head` (command ``os2d train-detector``); the harness
method is :class:`os2d.evaluation.baselines.detector_retrieval.DetectorRetrieval`.
"""
