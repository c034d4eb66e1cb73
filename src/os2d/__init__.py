"""os2d: one-shot object detection (OS2D, Osokin et al., ECCV 2020).

>>> from os2d import Detector
>>> det = Detector.from_weights("default")
>>> det.add_class("cereal", "cereal_box.jpg")
>>> dets = det.detect("shelf.jpg")
"""

from os2d.config import InferenceConfig, ModelConfig
from os2d.detector import Detector
from os2d.results import Detections

__version__ = "0.1.0"
__all__ = ["Detector", "Detections", "InferenceConfig", "ModelConfig", "__version__"]
