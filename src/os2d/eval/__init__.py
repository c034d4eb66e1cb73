"""Inference over image pyramids (decoding + NMS); evaluation metrics live beside it."""
