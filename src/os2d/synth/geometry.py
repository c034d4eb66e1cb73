"""Plane geometry of pasted objects: perspective views (yaw/pitch/roll), homographies, quads and their boxes.

Convention: continuous pixel coordinates, (0, 0) = top-left corner of the top-left pixel, x right, y down.
A quad is (4, 2) corners in the order top-left, top-right, bottom-right, bottom-left of the SOURCE image
(after the warp they need not be top/left any more).
"""

from __future__ import annotations

import math

import numpy as np


def homography(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 3x3 homography mapping 4 points ``src`` (4, 2) onto ``dst`` (4, 2) (h33 = 1).

    Raises:
        ValueError: degenerate points (three of them collinear).
    """
    a = np.zeros((8, 8))
    b = np.zeros(8)
    for i, ((x, y), (u, v)) in enumerate(zip(src, dst, strict=True)):
        a[2 * i] = [x, y, 1, 0, 0, 0, -u * x, -u * y]
        a[2 * i + 1] = [0, 0, 0, x, y, 1, -v * x, -v * y]
        b[2 * i], b[2 * i + 1] = u, v
    try:
        h = np.linalg.solve(a, b)
    except np.linalg.LinAlgError as e:
        raise ValueError(f"degenerate quad for a homography: {dst.tolist()}") from e
    return np.append(h, 1.0).reshape(3, 3)


def apply_homography(h: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N, 2) points -> (N, 2) points under the homography ``h``."""
    p = np.hstack([points, np.ones((len(points), 1))]) @ h.T
    return p[:, :2] / p[:, 2:3]


def rect_corners(width: float, height: float) -> np.ndarray:
    """(4, 2) corners of a ``width x height`` image: TL, TR, BR, BL."""
    return np.array([[0.0, 0.0], [width, 0.0], [width, height], [0.0, height]])


def rotation(yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """3x3 rotation: pitch about x (tilt), then yaw about y (turn), then roll about the optical axis z."""
    p, y, r = (math.radians(v) for v in (pitch_deg, yaw_deg, roll_deg))
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


def perspective_quad(aspect: float, yaw_deg: float, pitch_deg: float, roll_deg: float,
                     distance: float = 3.0) -> np.ndarray:
    """A planar rectangle of ``aspect`` = w / h seen by a pinhole camera after a 3-D rotation.

    The rectangle (height 1) is centred on the optical axis at ``distance`` heights from the camera; the focal
    length equals the distance, so the unrotated rectangle projects to a ``aspect x 1`` rectangle. Returns its
    (4, 2) projected corners (TL, TR, BR, BL of the source), centred near the origin.
    """
    if aspect <= 0 or distance <= 1:
        raise ValueError("aspect must be > 0 and distance > 1")
    corners = np.array([[-aspect / 2, -0.5, 0], [aspect / 2, -0.5, 0], [aspect / 2, 0.5, 0], [-aspect / 2, 0.5, 0]])
    pts = corners @ rotation(yaw_deg, pitch_deg, roll_deg).T + np.array([0.0, 0.0, distance])
    if np.any(pts[:, 2] <= 0.1):
        raise ValueError("the rotated rectangle passes behind the camera")
    return distance * pts[:, :2] / pts[:, 2:3]


def quad_area(quad: np.ndarray) -> float:
    """Area of a simple polygon (shoelace formula)."""
    x, y = quad[:, 0], quad[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def quad_box(quad: np.ndarray) -> np.ndarray:
    """Axis-aligned box ``(x1, y1, x2, y2)`` of a quad."""
    return np.concatenate([quad.min(axis=0), quad.max(axis=0)])


def fit_quad(quad: np.ndarray, *, height: float | None = None, area: float | None = None) -> np.ndarray:
    """Scale a quad about its box's top-left so that its box has ``height`` (or its area is ``area``); the box's
    top-left ends at the origin."""
    box = quad_box(quad)
    if height is not None:
        s = height / (box[3] - box[1])
    elif area is not None:
        s = math.sqrt(area / quad_area(quad))
    else:
        raise ValueError("give height or area")
    return (quad - box[:2]) * s


def clip_box(box: np.ndarray, width: int, height: int) -> np.ndarray:
    """Clip ``(x1, y1, x2, y2)`` to the image."""
    return np.array([min(max(box[0], 0.0), width), min(max(box[1], 0.0), height),
                     min(max(box[2], 0.0), width), min(max(box[3], 0.0), height)])
