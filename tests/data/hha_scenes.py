"""Depth maps of planes seen by a pitched pinhole camera, from ray-plane intersections, and
what the HHA of each must be by Gupta's definitions (independent of fcn_lightning.data.hha).

The camera frame is x right, y down (image rows), z forward; a camera pitched down by
``pitch`` degrees has gravity (0, cos, sin) in it. Pixel (row i, column j), counted from 0,
looks along ((j + 1 - cx) / fx, (i + 1 - cy) / fy, 1): MATLAB's 1-based pixel coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FX = FY = 50.0
CX, CY = 32.5, 24.5
SHAPE = (48, 64)


def rays(shape: tuple[int, int] = SHAPE) -> np.ndarray:
    """H x W x 3 ray directions with z = 1, so a distance along one is the depth Z."""
    rows, cols = shape
    x = (np.arange(cols) + 1 - CX) / FX
    y = (np.arange(rows) + 1 - CY) / FY
    xx, yy = np.meshgrid(x, y)
    return np.stack([xx, yy, np.ones(shape)], -1)


def gravity(pitch_deg: float) -> np.ndarray:
    t = np.radians(pitch_deg)
    return np.array([0.0, np.cos(t), np.sin(t)])


def plane_depth(normal: np.ndarray, offset: float, shape=SHAPE) -> np.ndarray:
    """Depth (cm) of the plane {P : normal . P = offset} along each ray; inf where the ray
    does not meet it in front of the camera."""
    with np.errstate(divide="ignore"):
        z = offset / (rays(shape) @ normal)
    return np.where(z > 0, z, np.inf)


def matlab_uint8(values: np.ndarray) -> np.ndarray:
    """uint8() of non-negative values: halves rounded up, clipped at 255."""
    return np.minimum(np.floor(np.asarray(values) + 0.5), 255).astype(np.uint8)


def expected_disparity(z_cm: np.ndarray) -> np.ndarray:
    return matlab_uint8(31000.0 / np.maximum(z_cm, 100.0))


@dataclass
class Room:
    """A floor ``height`` cm below the camera and a wall ``distance`` cm ahead (its normal
    horizontal, in the camera's pitch plane), seen by a camera pitched down ``pitch``."""

    pitch: float
    height: float
    distance: float | None = None

    @property
    def gravity(self) -> np.ndarray:
        return gravity(self.pitch)

    @property
    def wall_normal(self) -> np.ndarray:
        t = np.radians(self.pitch)
        return np.array([0.0, -np.sin(t), np.cos(t)])  # horizontal: perpendicular to gravity

    def depth_cm(self) -> np.ndarray:
        floor = plane_depth(self.gravity, self.height)
        if self.distance is None:
            return floor
        return np.minimum(floor, plane_depth(self.wall_normal, self.distance))

    def on_floor(self) -> np.ndarray:
        return plane_depth(self.gravity, self.height) == self.depth_cm()

    def height_above_floor(self) -> np.ndarray:
        points = rays() * self.depth_cm()[..., None]
        return self.height - points @ self.gravity
