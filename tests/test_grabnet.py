"""GrabNet: the networks in the released checkpoint layout (strict load round trip, clear errors for renamed /
reshaped / corrupt / missing files and a wrong basis), the BPS encoding against brute force, the MANO layer against
smplx, the frame mapping, seeding, and a tiny overfit of CoarseNet's decoder that proves the 6D -> rotation -> MANO
path end to end. Everything is random-initialised and CPU-only; MANO is the synthetic MANO-shaped file."""

from __future__ import annotations

import importlib.util
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hoigen.geometry.rotations import axis_angle_to_matrix
from hoigen.grasping import ContactGraspSampler, GraspConfig, GraspError, SurfaceSDF
from hoigen.grasping.grabnet_data import (
    GRABNET_ENV_VAR,
    GrabNetAssetError,
    bps_encode,
    check_grabnet_hand,
    describe_grabnet_folder,
    find_grabnet_files,
    grasp_sampler_factory,
    load_bps_basis,
    object_points,
)
from hoigen.hands import BuiltinHand, HandModel, HandParams
from hoigen.hands.lbs import lbs
from hoigen.hands.synthetic import make_synthetic_mano_dict, write_synthetic_mano
from hoigen.objects import BuiltinSource, make_asset

HAVE_TORCH = importlib.util.find_spec("torch") is not None and importlib.util.find_spec("smplx") is not None
pytestmark = pytest.mark.skipif(not HAVE_TORCH, reason="needs torch and smplx (pip install hoigen[mano])")

if HAVE_TORCH:
    import torch

    from hoigen.grasping.grabnet import (
        CoarseNet,
        GrabNet,
        GrabNetSampler,
        RefineNet,
        TorchManoLayer,
        describe_grabnet_dir,
        matrix_to_rot6d,
        rot6d_to_matrix,
    )


def _random_basis(seed: int = 0, n: int = 4096) -> np.ndarray:
    """Points uniform in a 0.15 m ball (a stand-in for GrabNet's basis, which cannot be regenerated)."""
    gen = np.random.default_rng(seed)
    d = gen.normal(size=(n, 3))
    return d / np.linalg.norm(d, axis=1, keepdims=True) * 0.15 * gen.random((n, 1)) ** (1 / 3)


def _randomise_buffers(net, seed: int) -> None:
    """Non-default BatchNorm statistics, so the round trip proves the buffers load too."""
    gen = torch.Generator().manual_seed(seed)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.copy_(0.1 * torch.randn(module.running_mean.shape, generator=gen))
            module.running_var.copy_(1.0 + 0.1 * torch.rand(module.running_var.shape, generator=gen))
            module.num_batches_tracked.fill_(7)


def _write_weights(root: Path, coarse, refine, basis) -> Path:
    """GrabNet's download layout: grabnet/models/{coarse,refine}net.pt and grabnet/configs/bps.npz."""
    (root / "grabnet" / "models").mkdir(parents=True, exist_ok=True)
    (root / "grabnet" / "configs").mkdir(parents=True, exist_ok=True)
    torch.save(coarse.state_dict(), root / "grabnet" / "models" / "coarsenet.pt")
    torch.save(refine.state_dict(), root / "grabnet" / "models" / "refinenet.pt")
    np.savez(root / "grabnet" / "configs" / "bps.npz", basis=basis)
    return root


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    coarse, refine = CoarseNet(), RefineNet()
    with torch.no_grad():
        _randomise_buffers(coarse, 1)
        _randomise_buffers(refine, 2)
    return coarse, refine


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory, nets):
    return _write_weights(tmp_path_factory.mktemp("grabnet"), *nets, _random_basis())


@pytest.fixture(scope="module")
def mano(tmp_path_factory):
    from hoigen.hands.mano import ManoHand

    root = tmp_path_factory.mktemp("mano")
    write_synthetic_mano(root / "MANO_RIGHT.pkl", np.random.default_rng(0))
    return ManoHand(root)


@pytest.fixture(scope="module")
def bottle():
    return BuiltinSource(("bottle",)).object_for(0, np.random.default_rng(5))


@pytest.fixture(scope="module")
def bottle_sdf(bottle):
    return SurfaceSDF(bottle.mesh, spacing=0.0005)


def _copy_weights(src: Path, dst: Path) -> Path:
    for path in src.rglob("*"):
        if path.is_file():
            target = dst / path.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    return dst


# --- the networks and their checkpoints ----------------------------------------------------------------------------


def test_original_layout_and_sizes(nets):
    coarse, refine = nets
    sd = coarse.state_dict()
    expect = {
        "enc_bn0.running_mean": (4096,),
        "enc_bn1.weight": (4108,),
        "enc_rb1.fc1.weight": (256, 4108),
        "enc_rb1.bn1.running_var": (256,),
        "enc_rb1.fc2.weight": (512, 256),
        "enc_rb1.bn2.weight": (512,),
        "enc_rb1.fc3.weight": (512, 4108),
        "enc_rb2.fc1.weight": (256, 4620),
        "enc_rb2.fc3.weight": (512, 4620),
        "enc_mu.weight": (16, 512),
        "enc_var.bias": (16,),
        "dec_bn1.running_mean": (4096,),
        "dec_rb1.fc1.weight": (256, 4112),
        "dec_rb2.fc3.weight": (512, 4624),
        "dec_pose.weight": (96, 512),
        "dec_trans.weight": (3, 512),
    }
    for key, shape in expect.items():
        assert tuple(sd[key].shape) == shape, key
    prefixes = {k.split(".")[0] for k in sd}
    assert prefixes == {
        "enc_bn0", "enc_bn1", "enc_rb1", "enc_rb2", "enc_mu", "enc_var",
        "dec_bn1", "dec_rb1", "dec_rb2", "dec_pose", "dec_trans",
    }  # fmt: skip
    rsd = refine.state_dict()
    assert {k.split(".")[0] for k in rsd} == {"bn1", "rb1", "rb2", "rb3", "out_p", "out_t"}
    assert tuple(rsd["bn1.running_mean"].shape) == (778,)
    assert tuple(rsd["rb1.fc1.weight"].shape) == (256, 877)
    assert tuple(rsd["rb2.fc3.weight"].shape) == (512, 1389)
    assert tuple(rsd["rb3.fc1.weight"].shape) == (256, 1389)
    assert tuple(rsd["out_p.weight"].shape) == (96, 512) and tuple(rsd["out_t.weight"].shape) == (3, 512)
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    assert count(coarse) / 1e6 == pytest.approx(14.0, abs=0.1)
    assert count(refine) / 1e6 == pytest.approx(3.3, abs=0.1)


def test_strict_round_trip(weights_dir, nets):
    model = GrabNet.load(weights_dir)
    for mine, loaded in zip(nets, (model.coarse, model.refine)):
        a, b = mine.state_dict(), loaded.state_dict()
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key
    assert not model.coarse.training and not model.refine.training
    np.testing.assert_array_equal(model.basis, _random_basis())
    assert "14.0 M" in describe_grabnet_dir(weights_dir)
    assert "strict load" in describe_grabnet_folder(weights_dir)


def test_weights_found_from_the_environment(weights_dir, monkeypatch):
    monkeypatch.setenv(GRABNET_ENV_VAR, str(weights_dir))
    files = find_grabnet_files(None)
    assert files["coarsenet.pt"] == weights_dir / "grabnet" / "models" / "coarsenet.pt"
    assert files["bps.npz"] == weights_dir / "grabnet" / "configs" / "bps.npz"
    monkeypatch.delenv(GRABNET_ENV_VAR)
    with pytest.raises(FileNotFoundError, match=f"neither --grabnet nor {GRABNET_ENV_VAR}"):
        find_grabnet_files(None)


def test_missing_weights_name_the_flag(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*--grabnet"):
        GrabNet.load(tmp_path / "nowhere")
    (tmp_path / "partial").mkdir()
    np.savez(tmp_path / "partial" / "bps.npz", basis=_random_basis())
    with pytest.raises(FileNotFoundError, match=r"coarsenet.pt, refinenet.pt not found.*--grabnet DIR"):
        GrabNet.load(tmp_path / "partial")


def _edited(weights_dir: Path, tmp: Path, edit) -> Path:
    root = _copy_weights(weights_dir, tmp)
    path = root / "grabnet" / "models" / "coarsenet.pt"
    state = torch.load(path, weights_only=True)
    edit(state)
    torch.save(state, path)
    return root


def test_renamed_key_is_reported(weights_dir, tmp_path):
    def rename(state):
        state["dec_pose_6d.weight"] = state.pop("dec_pose.weight")

    root = _edited(weights_dir, tmp_path, rename)
    with pytest.raises(GrabNetAssetError) as info:
        GrabNet.load(root)
    msg = str(info.value)
    assert "loaded strictly" in msg and "missing keys: dec_pose.weight" in msg
    assert "unexpected keys: dec_pose_6d.weight" in msg and "--grabnet DIR" in msg


def test_reshaped_key_is_reported(weights_dir, tmp_path):
    def reshape(state):
        state["dec_trans.weight"] = torch.zeros(4, 512)

    root = _edited(weights_dir, tmp_path, reshape)
    with pytest.raises(
        GrabNetAssetError, match=r"shape mismatches: dec_trans.weight \(4, 512\) in the file, \(3, 512\)"
    ):
        GrabNet.load(root)


def test_nan_weights_and_dataparallel_prefix(weights_dir, tmp_path):
    def poison(state):
        state["enc_mu.bias"][0] = float("nan")

    with pytest.raises(GrabNetAssetError, match="enc_mu.bias contain NaN"):
        GrabNet.load(_edited(weights_dir, tmp_path / "nan", poison))

    def prefix(state):
        for key in list(state):
            state[f"module.{key}"] = state.pop(key)

    # a checkpoint saved from nn.DataParallel ("module." on every key) loads
    model = GrabNet.load(_edited(weights_dir, tmp_path / "prefixed", prefix))
    assert torch.equal(model.coarse.dec_pose.weight, GrabNet.load(weights_dir).coarse.dec_pose.weight)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("damage", ["random", "truncated", "unsafe"])
def test_corrupt_checkpoint_is_a_clear_error(weights_dir, tmp_path, damage):
    root = _copy_weights(weights_dir, tmp_path)
    path = root / "grabnet" / "models" / "refinenet.pt"
    if damage == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:  # a pickle that would run a command: weights_only refuses it, nothing runs

        class Evil:
            def __reduce__(self):
                return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

        path.write_bytes(pickle.dumps({"rb1.fc1.weight": Evil()}))
    with pytest.raises(
        GrabNetAssetError, match="refinenet.pt is not a readable PyTorch checkpoint.*--grabnet DIR"
    ):
        GrabNet.load(root)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    "content, match",
    [
        ({"basis": np.zeros((1024, 3))}, r"shape \(1024, 3\), expected \(4096, 3\).*--grabnet DIR"),
        ({"points": np.zeros((4096, 3))}, "no 'basis' array"),
        (b"not a zip file", "not a readable .npz"),
    ],
)
def test_bad_basis_is_a_clear_error(weights_dir, tmp_path, content, match):
    root = _copy_weights(weights_dir, tmp_path)
    path = root / "grabnet" / "configs" / "bps.npz"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        with open(path, "wb") as handle:
            np.savez(handle, **content)
    with pytest.raises(GrabNetAssetError, match=match):
        GrabNet.load(root)


def test_basis_with_a_batch_axis_is_accepted(tmp_path):
    np.savez(tmp_path / "bps.npz", basis=_random_basis()[None])
    assert load_bps_basis(tmp_path / "bps.npz").shape == (4096, 3)


# --- data: BPS, object points -----------------------------------------------------------------------------------


def test_bps_equals_brute_force(bottle):
    from scipy.spatial.transform import Rotation

    points = object_points(bottle.mesh, count=600)
    basis = _random_basis(3)
    brute = np.linalg.norm(basis[:, None] - points[None], axis=2).min(axis=1)
    np.testing.assert_allclose(bps_encode(basis, points), brute, rtol=0, atol=1e-12)
    rot = Rotation.from_rotvec([0.3, -1.2, 2.0]).as_matrix()
    brute_rot = np.linalg.norm(basis[:, None] - (points @ rot.T)[None], axis=2).min(axis=1)
    np.testing.assert_allclose(bps_encode(basis, points, rot), brute_rot, rtol=0, atol=1e-12)


def test_object_points_lie_on_the_surface(bottle):
    import trimesh

    points = object_points(bottle.mesh)
    assert points.shape == (10_000, 3)
    np.testing.assert_array_equal(points, object_points(bottle.mesh))  # a function of the mesh alone
    _, dist, _ = trimesh.proximity.closest_point(bottle.mesh, points[::50])
    assert dist.max() < 1e-4  # trimesh's closest point is itself approximate at the 1e-5 m level


# --- rotations, the MANO layer, RefineNet's loop ------------------------------------------------------------------


def test_6d_round_trip_and_gram_schmidt():
    from scipy.spatial.transform import Rotation

    mats = torch.from_numpy(Rotation.random(50, random_state=0).as_matrix())
    six = matrix_to_rot6d(mats)
    assert six.shape == (50, 6)
    # layout: the 3x2 matrix of the first two columns, row by row
    torch.testing.assert_close(six[0], mats[0, :, :2].reshape(6))
    torch.testing.assert_close(rot6d_to_matrix(six), mats)
    noisy = rot6d_to_matrix(six * 3.0 + 0.05 * torch.randn(50, 6, dtype=torch.float64))
    eye = torch.eye(3, dtype=torch.float64).expand(50, 3, 3)
    torch.testing.assert_close(noisy.transpose(1, 2) @ noisy, eye)
    assert torch.allclose(torch.linalg.det(noisy), torch.ones(50, dtype=torch.float64))


def test_mano_layer_matches_smplx(mano):
    gen = np.random.default_rng(1)
    params = HandParams(
        gen.normal(0, 1, (3, 3)), gen.normal(0, 0.4, (3, 45)), gen.normal(0, 0.1, (3, 3)), np.zeros((3, 10))
    )
    layer = TorchManoLayer(mano.data, torch.float64)
    rot = torch.from_numpy(axis_angle_to_matrix(params.full_pose()))
    verts = layer(rot, torch.from_numpy(params.transl)).numpy()
    np.testing.assert_allclose(verts, mano.forward(params).vertices, atol=1e-8)
    assert verts.shape == (3, 778, 3)


def test_decoder_output_shapes_and_refine_loop(nets, mano):
    coarse, refine = nets
    coarse.eval(), refine.eval()
    z = torch.randn(5, 16, generator=torch.Generator().manual_seed(0))
    bps = torch.rand(5, 4096) * 0.1
    with torch.no_grad():
        pose6d, transl = coarse.decode(z, bps)
        assert pose6d.shape == (5, 96) and transl.shape == (5, 3)
        q = coarse.encode(bps, transl, rot6d_to_matrix(pose6d.reshape(5, 16, 6))[:, 0])
        assert q.mean.shape == (5, 16) and bool((q.scale > 0).all())
        layer = TorchManoLayer(mano.data)
        verts = layer(rot6d_to_matrix(pose6d.reshape(5, 16, 6)), transl)
        assert verts.shape == (5, 778, 3) and bool(torch.isfinite(verts).all())
        calls = []

        def distances(p6, t):  # the MANO hand is rebuilt from the current estimate
            calls.append(p6.clone())
            return layer(rot6d_to_matrix(p6.reshape(5, 16, 6)), t).norm(dim=2)

        p6, t = refine(
            verts.norm(dim=2),
            matrix_to_rot6d(rot6d_to_matrix(pose6d.reshape(5, 16, 6))).reshape(5, 96),
            transl,
            distances,
        )
    assert len(calls) == 2 and not torch.equal(calls[0], calls[1])  # iterations 2 and 3 recompute distances
    assert p6.shape == (5, 96) and t.shape == (5, 3)


# --- the sampler ------------------------------------------------------------------------------------------------------


def test_frame_mapping_and_seeding(weights_dir, mano, bottle, bottle_sdf):
    config = GraspConfig(method="grabnet", candidates=6)
    sampler = GrabNetSampler(bottle, mano, config, weights_dir, rotate="full", sdf=bottle_sdf)
    a = sampler.generate(np.random.default_rng([4, 0]))
    b = GrabNetSampler(bottle, mano, config, weights_dir, sdf=bottle_sdf).generate(
        np.random.default_rng([4, 0])
    )
    c = sampler.generate(np.random.default_rng([4, 1]))
    assert a.params.batch_size == 6 and a.z.shape == (6, 16) and a.rotations.shape == (6, 3, 3)
    for name in ("global_orient", "hand_pose", "transl"):
        assert getattr(a.params, name).tobytes() == getattr(b.params, name).tobytes()
    assert not np.allclose(a.params.transl, c.params.transl)
    # the object-frame hand is the GrabNet-frame hand turned back by R^T
    v_obj = lbs(mano.data, a.params).vertices
    v_gn = lbs(mano.data, a.params_grabnet).vertices
    np.testing.assert_allclose(v_obj, np.einsum("bvc,bcd->bvd", v_gn, a.rotations), atol=1e-9)


def test_random_weights_fail_the_gate_clearly(weights_dir, mano, bottle, bottle_sdf):
    config = GraspConfig(method="grabnet", candidates=3, max_attempts=2)
    sampler = GrabNetSampler(bottle, mano, config, weights_dir, sdf=bottle_sdf)
    with pytest.raises(GraspError, match="no GrabNet grasp of .* passed the quality gate") as info:
        sampler.sample(np.random.default_rng(0))
    assert info.value.candidates == 6


def test_too_large_object_is_refused(weights_dir, mano):
    import trimesh

    board = make_asset(
        trimesh.creation.box((0.7, 0.1, 0.1)), object_id="board", source="t", category="board", class_id=0,
        symmetry=None, up=(0, 1, 0),
    )  # fmt: skip
    sampler = GrabNetSampler(board, mano, GraspConfig(method="grabnet"), weights_dir)
    with pytest.raises(GraspError, match=r"reaches 0.357 m .* more than the 0.3 m .* --grasp contact"):
        sampler.sample(np.random.default_rng(0))


def _overfit_grabnet(mano, obj, sdf, steps: int = 300):
    """Train only CoarseNet's decoder on one contact grasp of ``obj`` (fixed object, no rotation), RefineNet's
    updates zeroed (the sampled grasp is CoarseNet's). Returns (GrabNet model, the target Grasp)."""
    # the target comes from the KD-tree contact sampler (contact-v1), whose grasps GrabNet was modelled on
    from hoigen.grasping.contact_v1 import ContactV1Sampler

    target = ContactV1Sampler(obj, mano, GraspConfig(betas_std=0.0), sdf=sdf).sample(
        np.random.default_rng([2, 0])
    )
    torch.manual_seed(0)
    coarse, refine = CoarseNet(), RefineNet()
    with torch.no_grad():
        for layer in (refine.out_p, refine.out_t):
            layer.weight.zero_(), layer.bias.zero_()
    model = GrabNet(coarse, refine, _random_basis(7))

    bps = torch.from_numpy(bps_encode(model.basis, object_points(obj.mesh))).float()[None]
    target_rot = torch.from_numpy(axis_angle_to_matrix(target.params.full_pose())[0]).float()
    target_t = torch.from_numpy(target.params.transl[0]).float()
    layer = TorchManoLayer(mano.data)
    target_verts = layer(target_rot[None], target_t[None])
    coarse.eval()  # BatchNorm from its (initial) running statistics; gradients still flow
    decoder = [p for name, p in coarse.named_parameters() if name.startswith("dec_")]
    opt = torch.optim.Adam(decoder, lr=1e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=1e-5)
    gen = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: extra threads only fight over a busy CPU
    try:
        for _ in range(steps):
            z = torch.randn(8, 16, generator=gen)
            pose6d, transl = coarse.decode(z, bps.expand(8, -1))
            rot = rot6d_to_matrix(pose6d.reshape(8, 16, 6))
            loss = ((rot - target_rot) ** 2).mean() + 100.0 * (layer(rot, transl) - target_verts).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            schedule.step()
    finally:
        torch.set_num_threads(threads)
    return model, target


def test_overfit_decoder_lands_on_its_training_grasp(mano, bottle, bottle_sdf):
    """Train only CoarseNet's decoder on one contact grasp (fixed object, no rotation): any z must then decode,
    through 6D -> Gram-Schmidt -> MANO, to that grasp, and the sampler must return it through the gate."""
    model, target = _overfit_grabnet(mano, bottle, bottle_sdf)
    config = GraspConfig(method="grabnet", betas_std=0.0, candidates=4, max_attempts=1)
    sampler = GrabNetSampler(bottle, mano, config, model, rotate="none", sdf=bottle_sdf)

    g = sampler.sample(np.random.default_rng(11))
    assert g.method == "grabnet" and g.hand == "mano" and g.object_id == bottle.id
    assert g.approach["grabnet_rotation"] == np.eye(3).tolist()
    err = np.linalg.norm(
        lbs(mano.data, g.params).vertices[0] - lbs(mano.data, target.params).vertices[0], axis=1
    )
    assert err.mean() < 0.003 and err.max() < 0.008, (err.mean(), err.max())  # metres
    assert config.passes(g.metrics) and g.passed >= 1
    again = sampler.sample(np.random.default_rng(11))
    assert again.params.hand_pose.tobytes() == g.params.hand_pose.tobytes()


@pytest.mark.slow
def test_synth_end_to_end_with_trained_grabnet_weights(mano, tmp_path):
    """``hoigen synth --grasp grabnet --hand mano`` on weights saved like GrabNet's download (plain state dicts,
    bps.npz with ``basis``): one sample of a folder object comes out with grasp method grabnet and the MANO hand.

    The pipeline's sampler turns the object by a uniformly random rotation before GrabNet sees it (``rotate="full"``,
    not configurable) and an overfit decoder knows one pose only, so the object is a ball: its BPS and its grasps are
    (up to the surface sampling) invariant under rotation, so the overfit grasp stays a valid grasp whatever the
    rotation. On the bottle of the overfit test the turned-back grasp misses or penetrates the object."""
    import json
    import tarfile

    import trimesh

    from hoigen.config import RunConfig
    from hoigen.objects import FolderSource
    from hoigen.synth.run import SynthJob, run_synth

    objects = tmp_path / "objects"
    objects.mkdir()
    trimesh.creation.icosphere(subdivisions=3, radius=0.035).export(objects / "ball.ply")
    ball = FolderSource(objects).load(0)  # exactly the asset the run will load
    model, _ = _overfit_grabnet(mano, ball, SurfaceSDF(ball.mesh, spacing=0.0005))
    weights = tmp_path / "grabnet"
    weights.mkdir()
    torch.save(model.coarse.state_dict(), weights / "coarsenet.pt")
    torch.save(model.refine.state_dict(), weights / "refinenet.pt")
    np.savez(weights / "bps.npz", basis=model.basis)

    config = RunConfig().replace(
        objects={"source": str(objects)},
        hand={"model": "mano", "mano": str(mano.path.parent)},
        grasp={"method": "grabnet", "grabnet": str(weights)},
        camera={"preset": "square-64"},
        trajectory={"frames": 2},
    )
    out = tmp_path / "run"
    run_synth(SynthJob(config, out, n=1, samples_per_shard=1), workers=1, progress=False)
    shards = sorted((out / "shards").glob("*.tar"))
    assert len(shards) == 1
    with tarfile.open(shards[0]) as tar:
        names = tar.getnames()
        metas = [n for n in names if n.endswith(".meta.json")]
        assert len(metas) == 1, names
        meta = json.loads(tar.extractfile(metas[0]).read())
    assert meta["grasp"]["method"] == "grabnet"
    assert meta["hand"]["model"] == "mano"
    assert meta["object"]["id"] == "ball"


# --- hands and wiring ----------------------------------------------------------------------------------------------


def test_grabnet_needs_the_mano_hand(weights_dir, bottle):
    config = GraspConfig(method="grabnet", grabnet=str(weights_dir))
    with pytest.raises(ValueError, match="GrabNet predicts MANO parameters; pass --hand mano --mano DIR"):
        GrabNetSampler(bottle, BuiltinHand(), config, weights_dir)
    with pytest.raises(ValueError, match="GrabNet predicts MANO parameters; pass --hand mano --mano DIR"):
        grasp_sampler_factory(config, BuiltinHand())


def test_left_hand_mano_is_refused(tmp_path):
    from hoigen.hands.mano import ManoHand, mano_data_from_dict

    left_file = write_synthetic_mano(tmp_path / "MANO_LEFT.pkl", np.random.default_rng(0), left=True)
    with pytest.raises(ValueError, match="left-hand MANO model"):
        ManoHand(left_file)

    class LeftMano(HandModel):  # a left-hand model that got past the loader
        data = mano_data_from_dict(make_synthetic_mano_dict(np.random.default_rng(0), left=True))

    with pytest.raises(ValueError, match="left hand .* GrabNet predicts right hands"):
        check_grabnet_hand(LeftMano())


def test_config_and_factory(weights_dir, mano, bottle):
    assert GraspConfig(method="grabnet", grabnet="/x").grabnet == "/x"
    with pytest.raises(ValueError, match="'contact', 'contact-v1' or 'grabnet'"):
        GraspConfig(method="diffusion")
    make = grasp_sampler_factory(GraspConfig(method="grabnet", grabnet=str(weights_dir)), mano)
    assert isinstance(make(bottle), GrabNetSampler)
    assert isinstance(grasp_sampler_factory(GraspConfig(), mano)(bottle), ContactGraspSampler)
    with pytest.raises(FileNotFoundError, match="--grabnet"):
        grasp_sampler_factory(GraspConfig(method="grabnet", grabnet=str(weights_dir / "missing")), mano)


def test_planner_uses_grabnet(weights_dir, mano):
    from hoigen.config import RunConfig
    from hoigen.synth.recipe import SequencePlanner

    config = RunConfig().replace(grasp={"method": "grabnet", "grabnet": str(weights_dir)})
    source = BuiltinSource(("can",))
    planner = SequencePlanner(config, source, mano)
    obj = source.object_for(0, np.random.default_rng(0))
    assert isinstance(planner._sampler(obj), GrabNetSampler)
    with pytest.raises(ValueError, match="pass --hand mano --mano DIR"):
        SequencePlanner(config, source, BuiltinHand())


def test_light_core_does_not_import_torch():
    code = (
        "import sys, hoigen.grasping.grabnet_data, hoigen.synth.recipe; "
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
