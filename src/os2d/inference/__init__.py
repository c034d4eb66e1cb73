"""Inference: image pyramids, the heads over them, decoding, class views merged, NMS, the class shortlist."""
