"""CoAE baseline (Hsieh et al., NeurIPS 2019, "One-shot object detection with co-attention and co-excitation"),
on the class-agnostic proposals of :mod:`os2d.agnostic` and the frozen trunk of an OS2D model.

Modules, in pipeline order: ``config`` (typed configs), ``roi`` (RoIAlign on a feature map), ``head`` (co-attention,
co-excitation and the ranking head), ``data`` (class-labelled feature cache, training samples), ``weights`` (the
weights file). The training loop is :mod:`os2d.train.coae` (command ``os2d train-coae``); the harness method is
:class:`os2d.evaluation.baselines.coae.CoaeMethod` (``os2d eval --method coae``).

What differs from the paper (to fit a CPU): the trunk is frozen and cached, the region proposals come from the
class-agnostic detector instead of a query-conditioned RPN, and co-attention works on each proposal's RoI features
(the proposal attends to the query and the query to the proposal) instead of whole feature maps.
"""
