"""The camera sampler keeps every built-in category inside the frame (SPD drops boxes over 600 x 440 px)."""

from __future__ import annotations

import numpy as np
import pytest

from hoigen.geometry.camera import CameraConfig, fit_distance, intrinsics_preset, sample_camera
from hoigen.geometry.transforms import apply_transform
from hoigen.objects.builtin import BUILTIN_CATEGORIES, make_builtin_object


@pytest.mark.parametrize("category", BUILTIN_CATEGORIES)
def test_every_category_fits_the_nocs_camera(category):
    config = CameraConfig(preset="nocs-camera")
    K = intrinsics_preset("nocs-camera")
    worst = np.zeros(2)
    for k in range(3):
        obj = make_builtin_object(category, np.random.default_rng([k, 1]), k)
        for j in range(6):
            camera = sample_camera(config, np.random.default_rng([k, j]), np.zeros(3), obj.up, obj.scale)
            uv = K.project(apply_transform(camera.T_cam_world, obj.mesh.vertices))
            size = uv.max(axis=0) - uv.min(axis=0)
            worst = np.maximum(worst, size)
            assert (uv >= -0.5).all() and (uv[:, 0] <= 639.5).all() and (uv[:, 1] <= 479.5).all(), category
    assert worst[0] <= 600 and worst[1] <= 440, (category, worst)
    assert worst.max() <= config.fill * 480 + 1e-6


def test_fit_distance_and_switching_it_off():
    K = intrinsics_preset("nocs-camera")
    d = fit_distance(K, 0.2, 0.5)
    # a sphere of radius r at distance d spans 2 f r / sqrt(d^2 - r^2) pixels
    assert 2 * 577.5 * 0.2 / np.sqrt(d**2 - 0.2**2) == pytest.approx(0.5 * 480)
    rng = np.random.default_rng(0)
    off = sample_camera(CameraConfig(preset="nocs-camera", fill=0.0), rng, np.zeros(3), np.eye(3)[1], 0.5)
    on = sample_camera(
        CameraConfig(preset="nocs-camera"), np.random.default_rng(0), np.zeros(3), np.eye(3)[1], 0.5
    )
    assert 0.35 <= off.distance <= 0.45 and on.distance > 0.45
    assert (off.elevation_deg, off.azimuth_deg) == (on.elevation_deg, on.azimuth_deg)  # same random draws
    with pytest.raises(ValueError, match="fill"):
        CameraConfig(fill=1.5)
