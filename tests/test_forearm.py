"""The forearm stub (``--forearm``): part of the scene in rgb, depth and mask, never part of the hand's labels.

One planned sample (a built-in camera, whose grasp puts the forearm in front of both the hand and the object in
the second frame) is rendered with the plain hand, with the stub, and with the plain hand again on the same
renderer. Outside the arm's pixels every image is byte-identical to the run without it; the conditions are identical
everywhere; the visibility labels are re-derived from the mask; depth lies on the posed stub. Then the config, the
errors for other hands and a tiny ``hoigen synth --forearm`` run (meta, resume, refusal of a changed config) and
the bytes of a default run.
"""

from __future__ import annotations

import importlib.util
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import trimesh
from click.testing import CliRunner

pytest.importorskip("cv2")  # the render extra

from hoigen.cli import main  # noqa: E402
from hoigen.config import HandConfig, RunConfig  # noqa: E402
from hoigen.hands import BuiltinHand, load_hand  # noqa: E402
from hoigen.objects import open_source  # noqa: E402
from hoigen.render import gl  # noqa: E402
from hoigen.render.renderer import ARM_ID, HAND_ID, OBJECT_ID, Renderer  # noqa: E402
from hoigen.synth.recipe import SequencePlanner, stage_rngs  # noqa: E402

CONFIG = RunConfig().replace(
    grasp={"candidates": 2, "max_attempts": 40}, trajectory={"frames": 2}, camera={"preset": "square-128"}
)
INDEX = 2  # builtin:nocs sample 2 (a camera), seen from behind the forearm (``_behind_the_arm``)
PHYSICAL = ("rgb", "depth", "mask", "nocs")  # drawn with the arm
CONDITIONS = ("normal", "skeleton", "hoimask", "tracking")  # always the scene without it
VISIBILITY = ("px_count_visib_obj", "bbox_visib_obj", "px_count_visib_hand", "bbox_visib_hand")
VISIBILITY += ("visib_fract_obj", "visib_fract_hand")


@pytest.fixture(scope="module")
def hands():
    return load_hand("builtin"), load_hand("builtin", forearm=True)


@pytest.fixture(scope="module")
def plans(hands):
    source = open_source(CONFIG.objects.source)
    return [SequencePlanner(CONFIG, source, hand).plan(INDEX) for hand in hands]


def _behind_the_arm(plan, hand) -> np.ndarray:
    """T_cam_world of a camera behind the forearm looking at the grasp in the last frame (the arm between the camera
    and the hand and object: what the checks below need; the sampled cameras mostly see the arm off to the side)."""
    from hoigen.geometry.camera import look_at
    from hoigen.geometry.rotations import axis_angle_to_matrix

    last = plan.trajectory.hand.to_dict()
    params = type(plan.trajectory.hand)(*(np.asarray(last[k])[-1:] for k in ("global_orient", "hand_pose", "transl", "betas")))
    out = hand.forward(params)
    wrist = out.joints_mano[0, 0]
    along = axis_angle_to_matrix(params.global_orient)[0] @ np.array([1.0, 0.0, 0.0])  # rest forearm: +x
    centre = 0.5 * (out.vertices[0].mean(axis=0) + plan.trajectory.T_world_obj[-1, :3, 3])
    eye = wrist + 0.30 * along + 0.06 * (wrist - centre) / np.linalg.norm(wrist - centre)
    return np.linalg.inv(look_at(eye, centre, np.array([0.0, 1.0, 0.0])))


@pytest.fixture(scope="module")
def renders(hands, plans):
    """(without, with, without again) on one renderer."""
    if importlib.util.find_spec("pyrender") is None:
        pytest.skip("pyrender is not installed (the render extra)")
    try:
        renderer = Renderer(plans[0].camera.intrinsics, CONFIG.render)
    except gl.RenderError as exc:
        pytest.skip(f"no headless OpenGL here: {exc}")
    order = (0, 1, 0)
    try:
        seqs = [
            renderer.render_sequence(
                plans[k].object,
                hands[k],
                plans[k].trajectory,
                _behind_the_arm(plans[0], hands[0]),
                stage_rngs(CONFIG.seed, INDEX)["render"],
            )
            for k in order
        ]
    finally:
        renderer.close()
    return seqs


def _bbox(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return [-1, -1, -1, -1]
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def test_the_sampler_and_the_hand_never_see_the_forearm(hands, plans):
    plain, with_arm = hands
    assert with_arm.data is plain.data and with_arm.faces is plain.faces
    assert plain.forearm_skin is None and with_arm.forearm_skin is not None
    a, b = plans
    assert a.grasp.params.to_dict() == b.grasp.params.to_dict() and a.grasp.metrics == b.grasp.metrics
    assert a.trajectory.hand.to_dict() == b.trajectory.hand.to_dict()
    assert with_arm.metadata() == {**plain.metadata(), "forearm": True}


def test_scene_is_meaningful(renders):
    """The checks below need the arm in view, in front of hand and object pixels somewhere."""
    off, on, _ = renders
    arm = [f.mask == ARM_ID for f in on.frames]
    assert all(a.sum() > 100 for a in arm)
    hidden = [(f_off.mask[a] == HAND_ID).sum() for f_off, a in zip(off.frames, arm)]
    hidden_obj = [(f_off.mask[a] == OBJECT_ID).sum() for f_off, a in zip(off.frames, arm)]
    assert max(hidden) > 50 and max(hidden_obj) > 50
    assert on.meta["instances"] == {"1": "object", "2": "hand", "3": "arm"}
    assert off.meta["instances"] == {"1": "object", "2": "hand"}


def test_outside_the_arm_everything_is_the_run_without_it(renders):
    off, on, again = renders
    assert np.array_equal(on.points, off.points) and np.array_equal(on.points_label, off.points_label)
    for f_off, f_on, f_again in zip(off.frames, on.frames, again.frames):
        arm = f_on.mask == ARM_ID
        for name in PHYSICAL + CONDITIONS:  # the renderer dropped the arm again for the next sequence
            assert getattr(f_again, name).tobytes() == getattr(f_off, name).tobytes(), name
        assert f_again.labels == f_off.labels
        for name in PHYSICAL:
            assert np.array_equal(getattr(f_on, name)[~arm], getattr(f_off, name)[~arm]), name
        for name in CONDITIONS:  # the conditions do not show it at all
            assert getattr(f_on, name).tobytes() == getattr(f_off, name).tobytes(), name
        for key, value in f_off.labels.items():  # joints, MANO, poses, amodal boxes and counts: the same
            if key not in VISIBILITY:
                assert f_on.labels[key] == value, key
        assert (f_on.rgb[arm] != f_off.rgb[arm]).any(axis=1).mean() > 0.5  # the arm is drawn
        assert not f_on.nocs[arm].any()  # no object surface seen there


def test_forearm_pixels_are_in_no_hand_mask_and_visibility_is_recounted(renders):
    off, on, _ = renders
    for f_off, f_on in zip(off.frames, on.frames):
        arm = f_on.mask == ARM_ID
        for inst, name in ((OBJECT_ID, "obj"), (HAND_ID, "hand")):
            visible = f_on.mask == inst
            assert not (visible & arm).any()
            assert not (visible & (f_off.mask != inst)).any()  # the arm only hides
            labels = f_on.labels
            assert labels[f"px_count_visib_{name}"] == int(visible.sum())
            assert labels[f"bbox_visib_{name}"] == _bbox(visible)
            total = labels[f"px_count_all_{name}"]
            assert total == f_off.labels[f"px_count_all_{name}"] >= visible.sum()
            assert labels[f"visib_fract_{name}"] == pytest.approx(visible.sum() / total)
        hoi_hand = (f_on.hoimask == (128, 128, 128)).all(axis=2)  # the condition: the hand as without the arm
        assert np.array_equal(hoi_hand, f_off.mask == HAND_ID)
    last = on.frames[-1].labels, off.frames[-1].labels
    assert last[0]["visib_fract_hand"] < last[1]["visib_fract_hand"]
    assert last[0]["visib_fract_obj"] < last[1]["visib_fract_obj"]


def test_rgb_changes_near_the_wrist(renders, plans):
    """The stub joins the hand at the wrist: in some frame the changed pixels reach within 1 cm of the wrist
    keypoint (at its depth), and they are arm pixels only."""
    off, on, _ = renders
    K = plans[1].camera.intrinsics.K
    closest = []
    for f_off, f_on in zip(off.frames, on.frames):
        changed = (f_on.rgb != f_off.rgb).any(axis=2)
        assert changed.any() and (f_on.mask[changed] == ARM_ID).all()
        ys, xs = np.nonzero(changed)
        wrist2d = np.asarray(f_on.labels["joints2d"][0])
        centimetre = K[0, 0] * 0.01 / f_on.labels["joints3d"][0][2]  # pixels per cm at the wrist's depth
        closest.append(np.hypot(xs - wrist2d[0], ys - wrist2d[1]).min() / centimetre)
        assert f_on.labels["joints2d"] == f_off.labels["joints2d"]
    assert min(closest) < 1.0, closest


def test_depth_lies_on_the_posed_stub_in_front_of_the_scene(renders, hands, plans):
    off, on, _ = renders
    _, with_arm = hands
    plan = plans[1]
    K = plan.camera.intrinsics.K
    from hoigen.grasping.trajectory import transform_hand_params

    rest_wrist = with_arm.rest_joints(plan.trajectory.hand.betas[0])[0]
    hand_cam = transform_hand_params(plan.trajectory.hand, _behind_the_arm(plans[0], hands[0]), rest_wrist)
    arm_v = with_arm.forearm_vertices(hand_cam)
    scale = on.meta["depth_scale"] / 1000.0
    for t, (f_off, f_on) in enumerate(zip(off.frames, on.frames)):
        ys, xs = np.nonzero(f_on.mask == ARM_ID)
        z = f_on.depth[ys, xs].astype(np.float64) * scale
        assert (z > 0).all()
        behind = f_off.depth[ys, xs] > 0
        assert (f_on.depth[ys, xs][behind] < f_off.depth[ys, xs][behind]).all()  # in front of what it hides
        points = np.stack([(xs - K[0, 2]) / K[0, 0] * z, (ys - K[1, 2]) / K[1, 1] * z, z], axis=1)
        stub = trimesh.Trimesh(arm_v[t], with_arm.forearm_skin.faces, process=False)
        _, dist, _ = trimesh.proximity.closest_point(stub, points)
        # 0.1 mm depth steps (rounded: 0.05 mm along the ray), more where the ray grazes the stub: 0.118 mm on
        # the worst pixel of this seed's grasp (pixel centres at +0.5 read 1.3 mm: the convention is right)
        assert dist.max() < 1.5e-4


def test_forearm_needs_the_builtin_v2_hand():
    for model in ("builtin-v1", "mano"):
        with pytest.raises(ValueError, match="hand.forearm needs the built-in v2 hand"):
            HandConfig(model=model, forearm=True)
        with pytest.raises(ValueError, match="forearm stub exists only for the built-in v2 hand"):
            load_hand(model, forearm=True)
    with pytest.raises(ValueError, match="forearm"):
        BuiltinHand(version=1, forearm=True)
    with pytest.raises(ValueError, match="hand.forearm must be true or false"):
        RunConfig.from_dict({"hand": {"forearm": "yes"}})
    assert HandConfig(model="builtin-v2", forearm=True).forearm


def test_the_config_records_the_forearm_only_when_on():
    default = RunConfig()
    assert (
        "forearm" not in default.to_dict()["hand"]
    )  # configs, shards and pins made before it keep their bytes
    on = default.replace(hand={"forearm": True})
    assert on.to_dict()["hand"]["forearm"] is True
    assert RunConfig.from_dict(on.to_dict()) == on and RunConfig.from_dict(default.to_dict()) == default
    assert on.replace(hand={"forearm": False}).to_dict() == default.to_dict()


def _synth(out: Path, config: Path, *extra: str, catch: bool = False):
    args = [
        "synth",
        "--n",
        "1",
        "--out",
        str(out),
        "--frames",
        "2",
        "--size",
        "48",
        "48",
        "--config",
        str(config),
    ]
    return CliRunner().invoke(main, [*args, *extra], catch_exceptions=catch)


def _metas(out: Path) -> list[dict]:
    metas = []
    for path in sorted((out / "shards").glob("hoigen-*.tar")):
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".meta.json"):
                    metas.append(json.loads(tar.extractfile(member).read()))
    return metas


def test_synth_with_forearm_records_it_and_resumes(tmp_path):
    if importlib.util.find_spec("pyrender") is None:
        pytest.skip("pyrender is not installed (the render extra)")
    config = tmp_path / "tiny.yaml"
    config.write_text("grasp:\n  candidates: 2\n  max_attempts: 40\n")
    out, plain = tmp_path / "arm", tmp_path / "plain"
    result = _synth(out, config, "--forearm")
    assert result.exit_code == 0, result.output
    assert _synth(plain, config).exit_code == 0
    (meta,) = _metas(out)
    (meta_plain,) = _metas(plain)
    assert meta["hand"]["forearm"] is True and "forearm" not in meta_plain["hand"]
    assert meta["config"]["hand"]["forearm"] is True and "forearm" not in meta_plain["config"]["hand"]
    assert meta["instances"] == {"1": "object", "2": "hand", "3": "arm"}
    assert meta_plain["instances"] == {"1": "object", "2": "hand"}
    for a, b in zip(meta["frames"], meta_plain["frames"]):  # the same grasp and hand labels
        assert a["mano"] == b["mano"] and a["joints2d"] == b["joints2d"] and a["bbox_hand"] == b["bbox_hand"]
    pinned = json.loads((out / "run.json").read_text())
    assert pinned["config"]["hand"]["forearm"] is True
    tars = {p.name: p.read_bytes() for p in (out / "shards").glob("*.tar")}
    again = _synth(out, config, "--forearm")  # the same command resumes: the finished shard is kept
    assert again.exit_code == 0 and "0 new shards, 1 kept" in again.output, again.output
    assert {p.name: p.read_bytes() for p in (out / "shards").glob("*.tar")} == tars
    refused = _synth(out, config, catch=True)  # without --forearm: the folder's pin refuses it
    assert refused.exit_code != 0 and "hand.forearm" in refused.output, refused.output
    wrong = CliRunner().invoke(
        main, ["synth", "--n", "1", "--out", str(tmp_path / "v1"), "--hand", "builtin-v1", "--forearm"]
    )
    assert wrong.exit_code != 0 and "hand.forearm needs the built-in v2 hand" in wrong.output
