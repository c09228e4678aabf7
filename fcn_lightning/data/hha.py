"""HHA: depth encoded as three 8-bit channels (Gupta et al., ECCV 2014), as the NYUDv2 FCNs
(``nyud-fcn32s-hha``, ``-color-hha``) were trained on it.

The channels, as Gupta's ``saveHHA.m`` / ``processDepthImage.m`` (s-gupta/rcnn-depth, with
s-gupta/rgbdutils) compute them, each rounded and clipped to 0..255 like MATLAB's uint8():

1. horizontal **disparity**: ``31000 / max(Z, 100)`` with Z the depth in centimetres (depths
   under 1 m clip at 255 since 31000/121.6 = 255; 2 m -> 155, 5 m -> 62);
2. **height** above the lowest point along gravity, in centimetres: ``h = -g . P`` (P the
   point in the camera frame, g the estimated gravity direction), minus its minimum over the
   image; when that minimum is above -90 cm (no floor in view) -130 cm is used instead, so
   the floor is assumed 1.3 m below the camera;
3. **angle** between the surface normal and gravity, in degrees, plus 38 (``+128 - 90``):
   a floor (normal along gravity) -> 38, a wall -> 128, a ceiling -> 218; where no normal
   could be fitted (no measured point in the 7 x 7 window) 218 too, as MATLAB's
   ``min(1, max(-1, NaN))`` is -1.

Steps: the point cloud ``X = (u - cx) Z / fx, Y = (v - cy) Z / fy`` with MATLAB's 1-based
pixel coordinates (pixel (row i, column j) counted from 0 is u = j + 1, v = i + 1, as
``getPointCloudFromZ`` and the NYU toolbox use them with this calibration); surface normals
by a least-squares plane ``n . P = 1`` over a square window (``computeNormalsSquareSupport``:
box sums with zero padding, pixels marked missing left out, normals turned away from the
camera), radius 3 (7 x 7) for the angle channel and radius 10 (21 x 21) for gravity;
gravity (``getYDir``) starting at the camera's y axis (0, 1, 0) (image down), 5 iterations
with a 45 degree threshold then 5 with 15 degrees: normals within the threshold of the
current direction (floors, ceilings) and within it of perpendicular (walls) are kept and
the new direction is the eigenvector of the smallest eigenvalue of ``sum_W n n^T -
sum_F n n^T`` (parallel to the first set, perpendicular to the second), signed towards
the previous one; the rotation from y to g (``getRMatrix``, identity under 0.1 degree).

Deviations, for inputs Gupta's code never met (his HHA came from in-painted depth, so
every pixel had a depth; on such input the result is his):

- a pixel without depth (0, negative or NaN in ``depth``) gets 0 in all three channels and
  takes no part in the minimum height (his code would place it at the camera centre);
- a window with 1 or 2 measured points gets no normal (angle 218, as an empty one), where
  his sums give a direction of rounding noise (the fit is 0 / 0 in exact arithmetic);
- with no normal to estimate gravity from (almost nothing in view) gravity stays (0, 1, 0)
  instead of the x axis MATLAB's ``eig`` of a zero matrix would give;
- ``gravity=`` may be given (an accelerometer's reading) instead of estimated.

NYUDv2 Kinect colour camera (640 x 480), from the NYU toolbox's ``camera_params.m`` as
Gupta's ``getCameraParam('color')`` copies it: fx 518.857901, fy 519.469611, cx 325.582449,
cy 253.736166. The prepared NYUD data (Gupta's ``data/images``, ``data/depth``, the FCN's
``nyud.tar.gz``) is the crop ``I(46:470, 41:600)`` (rows 45..469, columns 40..599 from 0):
425 x 560, principal point moved by (-40, -45) (``cropCamera``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.ndimage import uniform_filter

from fcn_lightning.errors import DataError

MIN_PLANE_POINTS = 3  # fewer points in a window: no plane, no normal
NORMAL_RADIUS = 3  # the angle channel's normals: a 7 x 7 window
GRAVITY_RADIUS = 10  # the normals gravity is estimated from: 21 x 21
GRAVITY_THRESHOLDS_DEG = (45.0, 15.0)
GRAVITY_ITERATIONS = (5, 5)
CAMERA_Y = np.array([0.0, 1.0, 0.0])
MIN_DISPARITY_DEPTH_CM = 100.0
DISPARITY_SCALE = 31000.0
NO_FLOOR_ABOVE_CM = -90.0  # a lowest point higher than this: no floor in view
ASSUMED_FLOOR_CM = -130.0
ANGLE_OFFSET_DEG = 128.0 - 90.0
# The prepared NYUD data's crop of the 480 x 640 frame: first row, first column, size.
NYUD_CROP_TOP, NYUD_CROP_LEFT = 45, 40
NYUD_FULL_SHAPE = (480, 640)
NYUD_CROPPED_SHAPE = (425, 560)


@dataclass(frozen=True)
class Camera:
    """Pinhole intrinsics in pixels, principal point in 1-based pixel coordinates."""

    fx: float
    fy: float
    cx: float
    cy: float

    def cropped(self, top: int, left: int) -> Camera:
        """The camera of the image cut out from row ``top``, column ``left`` (0-based)."""
        return replace(self, cx=self.cx - left, cy=self.cy - top)


NYUD_CAMERA = Camera(
    fx=5.1885790117450188e02,
    fy=5.1946961112127485e02,
    cx=3.2558244941119034e02,
    cy=2.5373616633400465e02,
)
NYUD_CROPPED_CAMERA = NYUD_CAMERA.cropped(NYUD_CROP_TOP, NYUD_CROP_LEFT)


def nyud_camera(shape: tuple[int, int]) -> Camera | None:
    """The NYUDv2 colour camera of a full (480 x 640) or prepared (425 x 560) image, None
    for any other size (whose intrinsics the user must give)."""
    if tuple(shape) == NYUD_FULL_SHAPE:
        return NYUD_CAMERA
    if tuple(shape) == NYUD_CROPPED_SHAPE:
        return NYUD_CROPPED_CAMERA
    return None


def point_cloud(z: np.ndarray, camera: Camera) -> np.ndarray:
    """H x W x 3 points (X right, Y down, Z forward) in the unit of ``z``."""
    height, width = z.shape
    u = np.arange(1, width + 1, dtype=np.float64)[None, :]
    v = np.arange(1, height + 1, dtype=np.float64)[:, None]
    return np.stack([(u - camera.cx) * z / camera.fx, (v - camera.cy) * z / camera.fy, z], -1)


def surface_normals(points: np.ndarray, missing: np.ndarray, radius: int) -> np.ndarray:
    """Unit normals (H x W x 3, NaN where the window holds under 3 points) of the plane
    ``n . P = 1`` fitted to the points of the (2 radius + 1)^2 window that are not missing,
    oriented away from the camera (``n . P >= 0``; where that is 0 or undefined, n_z >= 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(missing, np.nan, points[..., 2])
        x_z = points[..., 0] / points[..., 2]  # (u - cx) / fx: the ray, not the depth
        y_z = points[..., 1] / points[..., 2]
        inv_z = 1.0 / z
        one = np.where(np.isnan(z), np.nan, 1.0)
        x_z, y_z = np.where(np.isnan(z), np.nan, x_z), np.where(np.isnan(z), np.nan, y_z)
        # a = (X/Z, Y/Z, 1): n . a = 1/Z; the normal equations' six sums and three right sides
        terms = [x_z * x_z, x_z * y_z, x_z, y_z * y_z, y_z, one, x_z * inv_z, y_z * inv_z, inv_z]
        # window means, not sums: the scale cancels in the normalisation below
        size = 2 * radius + 1
        s = [uniform_filter(np.nan_to_num(t, nan=0.0), size, mode="constant") for t in terms]
        a11, a12, a13, a22, a23, a33, b1, b2, b3 = s
        # the adjugate (det times the inverse): the scale goes with the normalisation below
        c11, c12, c13 = a22 * a33 - a23 * a23, -(a12 * a33 - a13 * a23), a12 * a23 - a13 * a22
        c22, c23, c33 = a11 * a33 - a13 * a13, -(a11 * a23 - a12 * a13), a11 * a22 - a12 * a12
        n = np.stack(
            [
                c11 * b1 + c12 * b2 + c13 * b3,
                c12 * b1 + c22 * b2 + c23 * b3,
                c13 * b1 + c23 * b2 + c33 * b3,
            ],
            -1,
        )
        n /= np.linalg.norm(n, axis=-1, keepdims=True)
        # the running means leave rounding residue where the window is empty
        n[window_counts(~np.isnan(z), radius) < MIN_PLANE_POINTS] = np.nan
        n *= _sign_or_one(n[..., 2])[..., None]
        n *= _sign_or_one(np.sum(n * points, axis=-1))[..., None]
    return n


def window_counts(present: np.ndarray, radius: int) -> np.ndarray:
    """How many ``present`` pixels each (2 radius + 1)^2 window holds, counted exactly."""
    size = 2 * radius + 1
    padded = np.pad(present.astype(np.int64), radius)
    table = np.zeros((padded.shape[0] + 1, padded.shape[1] + 1), dtype=np.int64)
    table[1:, 1:] = padded.cumsum(0).cumsum(1)  # table[i, j]: the count above-left of (i, j)
    return table[size:, size:] - table[:-size, size:] - table[size:, :-size] + table[:-size, :-size]


def _sign_or_one(values: np.ndarray) -> np.ndarray:
    sign = np.sign(values)
    return np.where((sign == 0) | np.isnan(sign), 1.0, sign)


def gravity_direction(
    normals: np.ndarray,
    start: np.ndarray = CAMERA_Y,
    thresholds_deg: tuple[float, ...] = GRAVITY_THRESHOLDS_DEG,
    iterations: tuple[int, ...] = GRAVITY_ITERATIONS,
) -> np.ndarray:
    """The unit gravity direction in the camera frame (pointing down) from a normal field."""
    nn = normals.reshape(-1, 3)
    nn = np.ascontiguousarray(nn[~np.isnan(nn[:, 0])].T)  # 3 x N: rows stream fastest
    direction = np.asarray(start, dtype=np.float64)
    if nn.shape[1] == 0:
        return direction
    # n n^T of every normal as its six distinct entries: each step is then one weighted sum
    i, j = np.triu_indices(3)
    outer = nn[i] * nn[j]
    for threshold, count in zip(thresholds_deg, iterations, strict=True):
        cos_t, sin_t = np.cos(np.deg2rad(threshold)), np.sin(np.deg2rad(threshold))
        for _ in range(count):
            similarity = np.abs(direction @ nn)
            weight = (similarity < sin_t).astype(np.float64) - (similarity > cos_t)
            scatter = np.zeros((3, 3))
            scatter[i, j] = outer @ weight  # sum_W n n^T - sum_F n n^T, upper triangle
            _, vectors = np.linalg.eigh(scatter, UPLO="U")
            new = vectors[:, 0]
            direction = new * (1.0 if new @ direction >= 0 else -1.0)
    return direction


def rotation_between(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """The rotation turning unit ``start`` onto ``end`` about their cross product (Rodrigues),
    the identity when they are within 0.1 degree (getRMatrix)."""
    start, end = start / np.linalg.norm(start), end / np.linalg.norm(end)
    phi = np.degrees(np.arccos(min(1.0, abs(float(start @ end)))))
    if abs(phi) <= 0.1:
        return np.eye(3)
    axis = np.cross(start, end)
    axis /= np.linalg.norm(axis)
    s_hat = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    phi = np.radians(phi)
    return np.eye(3) + np.sin(phi) * s_hat + (1 - np.cos(phi)) * (s_hat @ s_hat)


def hha_channels(
    depth_m: np.ndarray,
    camera: Camera,
    missing: np.ndarray | None = None,
    gravity: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Disparity, height (cm) and angle (degrees) with their offsets, H x W x 3 float64
    before rounding, and the estimated gravity; NaN where the depth is missing."""
    depth_m = np.asarray(depth_m, dtype=np.float64)
    if depth_m.ndim != 2:
        raise DataError(f"depth must be one H x W channel, got shape {depth_m.shape}")
    valid = np.isfinite(depth_m) & (depth_m > 0)
    if not valid.any():
        raise DataError("the depth image has no pixel with a depth (all 0 or NaN)")
    excluded = ~valid if missing is None else (~valid | np.asarray(missing, dtype=bool))
    z_cm = np.where(valid, depth_m * 100.0, 0.0)
    points = point_cloud(z_cm, camera)
    if gravity is None:
        gravity = gravity_direction(surface_normals(points, excluded, GRAVITY_RADIUS))
    gravity = np.asarray(gravity, dtype=np.float64) / np.linalg.norm(gravity)
    normals = surface_normals(points, excluded, NORMAL_RADIUS)
    rotation = rotation_between(CAMERA_Y, gravity)
    height = -(points @ rotation)[..., 1]  # y of R^T P: -g . P, the height above the camera
    lowest = float(height[valid].min())
    if lowest > NO_FLOOR_ABOVE_CM:
        lowest = ASSUMED_FLOOR_CM
    # min(1, max(-1, NaN)) is -1 in MATLAB (its max skips NaN): no normal reads as 180 degrees
    cosine = np.nan_to_num(np.clip(normals @ gravity, -1.0, 1.0), nan=-1.0)
    angle = np.degrees(np.arccos(cosine))
    disparity = DISPARITY_SCALE / np.maximum(z_cm, MIN_DISPARITY_DEPTH_CM)
    channels = np.stack([disparity, height - lowest, angle + ANGLE_OFFSET_DEG], -1)
    channels[~valid] = np.nan
    return channels, gravity


def to_uint8(values: np.ndarray) -> np.ndarray:
    """MATLAB's uint8(): round half away from zero, clip to 0..255, NaN -> 0."""
    rounded = np.sign(values) * np.floor(np.abs(values) + 0.5)
    return np.nan_to_num(np.clip(rounded, 0, 255), nan=0.0).astype(np.uint8)


def encode_hha(
    depth_m: np.ndarray,
    camera: Camera = NYUD_CAMERA,
    missing: np.ndarray | None = None,
    gravity: np.ndarray | None = None,
) -> np.ndarray:
    """HHA, H x W x 3 uint8, of ``depth_m`` (metres; 0 or NaN: no depth).

    ``missing`` marks pixels whose depth is filled in (Gupta: the raw depth's zeros), left
    out of the normals but still encoded; ``gravity`` replaces the estimate."""
    channels, _ = hha_channels(depth_m, camera, missing, gravity)
    return to_uint8(channels)
