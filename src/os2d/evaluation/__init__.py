"""Evaluation: VOC metrics, the dataset harness (OS2D and the baselines), PR-curve plots."""
