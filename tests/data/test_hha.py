"""HHA of planes whose encoding can be stated exactly (tests/data/hha_scenes.py builds them
from ray-plane intersections): a floor, a floor under 90 cm, a wall over a floor, a ramp;
missing and filled-in depth; MATLAB's rounding; the NYUDv2 cameras."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import binary_erosion

from fcn_lightning.data.hha import (
    Camera,
    encode_hha,
    hha_channels,
    nyud_camera,
    point_cloud,
    rotation_between,
    to_uint8,
)
from fcn_lightning.errors import DataError
from tests.data.hha_scenes import (
    CX,
    CY,
    FX,
    FY,
    Room,
    expected_disparity,
    gravity,
    matlab_uint8,
    plane_depth,
    rays,
)

CAMERA = Camera(fx=FX, fy=FY, cx=CX, cy=CY)
FLOOR = Room(pitch=40.0, height=150.0)  # every ray meets the floor


def degrees_between(a: np.ndarray, b: np.ndarray) -> float:
    cosine = a @ b / np.linalg.norm(a) / np.linalg.norm(b)
    return float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))


def test_a_floor_has_angle_0_height_0_and_the_scaled_inverse_depth():
    depth = FLOOR.depth_cm()
    channels, estimated = hha_channels(depth / 100, CAMERA)
    hha = to_uint8(channels)
    assert degrees_between(estimated, FLOOR.gravity) < 1e-6
    assert (hha[..., 2] == 38).all()  # normal along gravity: 0 degrees + 128 - 90
    assert (hha[..., 1] == 0).all()  # every point is the lowest one
    np.testing.assert_array_equal(hha[..., 0], expected_disparity(depth))
    assert len(np.unique(hha[..., 0])) > 10  # the disparity does change down the image


def test_a_floor_less_than_90_cm_below_the_camera_is_taken_as_130_cm_below():
    room = Room(pitch=40.0, height=60.0)
    hha = encode_hha(room.depth_cm() / 100, CAMERA)
    assert (hha[..., 1] == 130 - 60).all()
    assert (hha[..., 2] == 38).all()


def test_a_wall_facing_the_camera_has_angle_90_and_its_height_above_the_floor():
    room = Room(pitch=20.0, height=150.0, distance=300.0)
    channels, estimated = hha_channels(room.depth_cm() / 100, CAMERA)
    hha = to_uint8(channels)
    floor_rows = np.flatnonzero(room.on_floor().all(axis=1))
    crease = floor_rows.min()  # the wall's foot: one image row, the camera only pitches
    assert 10 < crease < 40 and (~room.on_floor()[:crease]).all()
    assert degrees_between(estimated, room.gravity) < 0.5
    wall, floor = slice(0, crease - 3), slice(crease + 3, None)  # 7 x 7 normals: one plane
    assert (hha[wall, :, 2] == 128).all()
    assert (hha[floor, :, 2] == 38).all()
    expected = matlab_uint8(room.height_above_floor())
    assert np.abs(hha[wall, :, 1].astype(int) - expected[wall]).max() <= 1
    assert (hha[floor, :, 1] <= 1).all()
    assert hha[0, 32, 1] > hha[crease - 4, 32, 1] + 50  # higher up the wall, higher


def test_a_ramp_rises_linearly_along_its_slope_at_its_angle_to_gravity():
    """A plane tilted 30 degrees from the horizontal, gravity given: angle 30 everywhere,
    height affine in the coordinate along the slope with slope sin(30 degrees)."""
    down = gravity(40.0)
    normal = gravity(40.0 + 30.0)  # gravity turned 30 degrees about the camera's x axis
    depth = plane_depth(normal, 150.0)
    assert np.isfinite(depth).all()
    channels, _ = hha_channels(depth / 100, CAMERA, gravity=down)
    assert (to_uint8(channels)[..., 2] == 38 + 30).all()
    points = rays() * depth[..., None]
    along = points @ np.cross(normal, [1.0, 0.0, 0.0])  # a unit vector down the slope
    slope, _ = np.polyfit(along.ravel(), channels[..., 1].ravel(), 1)
    assert abs(abs(slope) - np.sin(np.radians(30.0))) < 1e-9
    height = -(points @ down)
    lowest = height.min() if height.min() <= -90 else -130.0
    np.testing.assert_allclose(channels[..., 1], height - lowest, atol=1e-9)


def test_pixels_without_depth_are_zero_and_change_nothing_else():
    depth = FLOOR.depth_cm() / 100
    holed = depth.copy()
    holed[10:14, 20:30] = 0.0
    holed[30, 5] = np.nan
    holed[0, 0] = -1.0
    hha, whole = encode_hha(holed, CAMERA), encode_hha(depth, CAMERA)
    gone = ~(np.isfinite(holed) & (holed > 0))
    assert gone.sum() == 4 * 10 + 2
    assert (hha[gone] == 0).all()
    np.testing.assert_array_equal(hha[~gone], whole[~gone])  # a plane fits the rest exactly


def test_filled_in_pixels_are_encoded_but_left_out_of_the_normals():
    depth = FLOOR.depth_cm() / 100
    filled = np.zeros(depth.shape, dtype=bool)
    filled[5:25, 10:40] = True  # whole 7 x 7 windows inside: their normals come from nothing
    channels, _ = hha_channels(depth, CAMERA, missing=filled)
    hha = to_uint8(channels)
    inner = (slice(9, 21), slice(14, 36))
    assert (hha[inner][..., 2] == 38 + 180).all()  # no normal: MATLAB's max(-1, NaN) is -1
    np.testing.assert_array_equal(hha[..., :2], encode_hha(depth, CAMERA)[..., :2])
    # 1 or 2 pixels in: the window still holds two rows (or columns) of floor points
    edge = filled & ~binary_erosion(filled, np.ones((3, 3)), iterations=2)
    assert not np.isnan(channels[filled]).any()
    assert edge.sum() == 20 * 30 - 16 * 26
    assert (hha[edge][:, 2] == 38).all()


def test_constant_depths_give_the_documented_disparities():
    for metres, value in ((2.0, 155), (3.1, 100), (0.5, 255), (1.0, 255), (6.2, 50)):
        hha = encode_hha(np.full((20, 30), metres), CAMERA)
        assert (hha[..., 0] == value).all(), metres


def test_uint8_rounds_halves_up_and_clips_like_matlab():
    values = np.array([0.49, 0.5, 1.5, 2.5, 254.5, 254.49, 300.0, -3.0, np.nan])
    np.testing.assert_array_equal(to_uint8(values), [0, 1, 2, 3, 255, 254, 255, 0, 0])


def test_point_cloud_counts_pixels_from_1_like_matlab():
    camera = Camera(fx=2.0, fy=4.0, cx=1.0, cy=2.0)
    points = point_cloud(np.full((2, 3), 8.0), camera)
    # column j -> u = j + 1: X = (u - 1) * 8 / 2; row i -> v = i + 1: Y = (v - 2) * 8 / 4
    np.testing.assert_array_equal(points[..., 0], [[0, 4, 8], [0, 4, 8]])
    np.testing.assert_array_equal(points[..., 1], [[-2, -2, -2], [0, 0, 0]])
    np.testing.assert_array_equal(points[..., 2], np.full((2, 3), 8.0))


def test_the_nyud_cameras_full_and_cropped():
    full = nyud_camera((480, 640))
    assert (full.fx, full.fy) == (5.1885790117450188e02, 5.1946961112127485e02)
    assert (full.cx, full.cy) == (3.2558244941119034e02, 2.5373616633400465e02)
    cropped = nyud_camera((425, 560))  # I(46:470, 41:600): 45 rows and 40 columns cut
    assert cropped.cx == pytest.approx(325.58244941119034 - 40)
    assert cropped.cy == pytest.approx(253.73616633400465 - 45)
    assert cropped.fx == full.fx and nyud_camera((48, 64)) is None


def test_rotation_turns_the_camera_axis_onto_gravity():
    for pitch in (5.0, 30.0, 80.0):
        rotation = rotation_between(np.array([0.0, 1.0, 0.0]), gravity(pitch))
        np.testing.assert_allclose(rotation @ [0.0, 1.0, 0.0], gravity(pitch), atol=1e-12)
        np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
    assert (rotation_between(np.array([0.0, 1.0, 0.0]), gravity(0.05)) == np.eye(3)).all()


def test_an_image_without_any_depth_is_refused():
    with pytest.raises(DataError, match="no pixel with a depth"):
        encode_hha(np.zeros((8, 8)), CAMERA)
    with pytest.raises(DataError, match="one H x W channel"):
        encode_hha(np.ones((8, 8, 3)), CAMERA)
