"""HOIDiffusion conditions (normal-map convention, crops) and the anchor-frame attention processor.

The normal map test is the issue's: hoigen's exact normals mapped to the adapters' convention must agree in sign
and direction with a MiDaS-style Sobel normal map computed from the exact depth of the same frame.
"""

from __future__ import annotations

import tarfile

import numpy as np
import pytest

pytest.importorskip("cv2")
torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from hoigen.config import RunConfig  # noqa: E402
from hoigen.diffusion.hoidiffusion.conditions import (  # noqa: E402
    Crop,
    binary_seg,
    crop_conditions,
    disparity_from_depth,
    exact_normal_condition,
    frame_conditions,
    midas_sobel_normals,
    sequence_crop,
)
from hoigen.render.png import decode_png  # noqa: E402
from hoigen.synth.run import SynthJob, run_synth  # noqa: E402


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    out = tmp_path_factory.mktemp("photo-cond") / "run"
    config = RunConfig().replace(
        camera={"preset": "square-128"}, trajectory={"frames": 2}, grasp={"candidates": 2, "max_attempts": 40}
    )
    run_synth(SynthJob(config, out, n=2, samples_per_shard=2), workers=1, progress=False)
    samples = {}
    for path in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(path) as tar:
            for info in tar:
                key, suffix = info.name.split(".", 1)
                samples.setdefault(key, {})[suffix] = tar.extractfile(info).read()
    return samples


def _angles_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return np.degrees(np.arccos(np.clip((a * b).sum(-1), -1.0, 1.0)))


def test_exact_normals_match_midas_sobel_convention(frames):
    import cv2

    medians, signs = [], []
    for members in frames.values():
        for t in range(2):
            normal = decode_png(members[f"f{t:03d}.normal.png"])
            depth = decode_png(members[f"f{t:03d}.depth.png"]).astype(np.float64)
            hoimask = decode_png(members[f"f{t:03d}.hoimask.png"])
            seg = binary_seg(hoimask)
            mapped = exact_normal_condition(normal, seg)
            sobel = midas_sobel_normals(disparity_from_depth(depth), seg)
            # interior pixels only: Sobel's 3x3 stencil must not straddle the silhouette
            inner = cv2.erode(seg.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
            m = mapped[inner] * 2 - 1
            s = sobel[inner] * 2 - 1
            tilt = (
                np.linalg.norm(s[:, :2], axis=1) > 0.02
            )  # pixels where the disparity gradient is measurable
            assert tilt.sum() > 50
            ang = _angles_deg(m[tilt, :2], s[tilt, :2])
            medians.append(np.median(ang))
            signs.append(np.mean(m[:, 2] > 0))
            assert np.all(sobel[inner][:, 2] > 0.5)
    # the image-plane direction of the mapped normal is the direction of the disparity gradient
    print(f"median image-plane angle, mapped exact vs MiDaS-Sobel(exact depth): {np.median(medians):.2f} deg")
    assert np.median(medians) < 10.0, medians
    assert min(signs) > 0.97  # B > 0.5 (facing the camera) in both conventions; grazing silhouette pixels aside


def test_mapping_flips_the_opencv_normal():
    # a surface facing the camera and tilted toward -x (OpenCV) has n = (-a, 0, -1)/|.|
    n = np.array([-0.6, 0.0, -0.8])
    png = np.round((n + 1) / 2 * 255).astype(np.uint8)[None, None].repeat(4, 0).repeat(4, 1)
    out = exact_normal_condition(png, np.ones((4, 4), bool))
    assert out[0, 0, 0] > 0.75 and abs(out[0, 0, 1] - 0.5) < 0.01 and out[0, 0, 2] > 0.85
    # MiDaS: disparity grows with x on such a surface -> Sobel_x > 0 -> R > 0.5 as well
    disparity = np.tile(np.linspace(1.0, 2.0, 16), (16, 1))
    assert midas_sobel_normals(disparity)[8, 8, 0] > 0.5
    # background is zero
    assert np.all(exact_normal_condition(png, np.zeros((4, 4), bool)) == 0)


def test_frame_conditions_order_and_range(frames):
    members = next(iter(frames.values()))
    frame = {k: decode_png(members[f"f000.{k}.png"]) for k in ("skeleton", "normal", "hoimask")}
    stack = frame_conditions(frame)
    assert stack.shape == (3, 3, 128, 128) and stack.dtype == np.float32
    assert stack.min() >= 0 and stack.max() <= 1
    np.testing.assert_array_equal(stack[0], frame["skeleton"].transpose(2, 0, 1) / np.float32(255))
    np.testing.assert_array_equal(stack[2], frame["hoimask"].transpose(2, 0, 1) / np.float32(255))
    with pytest.raises(ValueError, match="--normals"):
        frame_conditions(frame, normals="sobel")
    with pytest.raises(ValueError, match="--midas"):
        frame_conditions(frame, normals="midas")


def test_crop_intrinsics_follow_the_pixels():
    """The crop's K maps a point to where cv2's resize puts it (pixel centres at integer coordinates)."""
    w, h = 96, 64
    u = np.tile(np.arange(w, dtype=np.float32), (h, 1))
    v = np.tile(np.arange(h, dtype=np.float32)[:, None], (1, w))
    crop = Crop(x0=20, y0=10, side=40, size=80)  # 2x upscale
    cu, cv = crop.apply(u), crop.apply(v)
    K = np.array([[100.0, 0, 47.5], [0, 100.0, 31.5], [0, 0, 1]])  # noqa: N806
    K2 = crop.K(K)  # noqa: N806
    X = np.array([0.03, -0.01, 0.5])  # noqa: N806
    p, p2 = K @ X, K2 @ X
    p, p2 = p[:2] / p[2], p2[:2] / p2[2]
    # where the crop maps the original pixel coordinate p: invert the resized coordinate ramps at p2
    i, j = int(round(p2[1])), int(round(p2[0]))
    fu = cu[i, j] + (p2[0] - j) * (cu[i, j + 1] - cu[i, j])
    fv = cv[i, j] + (p2[1] - i) * (cv[i + 1, j] - cv[i, j])
    np.testing.assert_allclose([fu, fv], p, atol=1e-3)


def test_sequence_crop_covers_boxes_and_crop_conditions():
    meta = {
        "camera": {"width": 200, "height": 160, "K": [[100, 0, 99.5], [0, 100, 79.5], [0, 0, 1]]},
        "frames": [
            {"bbox_obj": [60, 50, 30, 20], "bbox_hand": [80, 40, 40, 40]},
            {"bbox_obj": [70, 50, 30, 20], "bbox_hand": [0, 0, 0, 0]},
        ],
    }
    crop = sequence_crop(meta, size=64, margin=10)
    assert crop.side >= 60 + 20 and crop.x0 <= 50 and crop.x0 + crop.side >= 130
    assert crop.y0 <= 30 and crop.y0 + crop.side >= 90
    stack = np.zeros((3, 3, 160, 200), np.float32)
    stack[2, :, 60:70, 80:90] = 1.0
    out = crop_conditions(stack, crop)
    assert out.shape == (3, 3, 64, 64)
    assert set(np.unique(out[2])) <= {0.0, 1.0}  # masks stay binary (nearest)


# ---------------------------------------------------------------------------------------------------------------
# anchor-frame attention


def _tiny_unet():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=32,
        attention_head_dim=4,
    ).eval()


def test_anchor_attention_keeps_the_anchor_and_changes_the_others():
    from hoigen.diffusion.hoidiffusion.attention import (
        AnchorFrameAttnProcessor,
        set_anchor_attention,
        set_frame_groups,
    )

    unet = _tiny_unet()
    frames = 5  # anchor = frame 2
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2 * frames, 4, 16, 16, generator=g)  # [uncond 5 ; cond 5]
    ctx = torch.randn(2 * frames, 7, 32, generator=g)
    with torch.no_grad():
        base = unet(x, 10, encoder_hidden_states=ctx).sample
        procs = set_anchor_attention(unet, True)
        assert procs and all(isinstance(p, AnchorFrameAttnProcessor) for p in procs)
        kinds = {n: type(p).__name__ for n, p in unet.attn_processors.items()}
        assert all(v == "AnchorFrameAttnProcessor" for n, v in kinds.items() if "attn1" in n)
        assert all(v == "AttnProcessor2_0" for n, v in kinds.items() if "attn2" in n)
        set_frame_groups(procs, [frames])
        anchored = unet(x, 10, encoder_hidden_states=ctx).sample
    for chunk in (0, frames):
        torch.testing.assert_close(anchored[chunk + 2], base[chunk + 2], atol=1e-5, rtol=1e-5)
        for f in (0, 1, 3, 4):
            assert (anchored[chunk + f] - base[chunk + f]).abs().max() > 1e-4
    # a frame's output depends on the anchor frame, not on the other non-anchor frames
    x2 = x.clone()
    x2[0] += 1.0  # change frame 0 (uncond chunk)
    with torch.no_grad():
        again = unet(x2, 10, encoder_hidden_states=ctx).sample
    torch.testing.assert_close(again[1], anchored[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(again[2], anchored[2], atol=1e-5, rtol=1e-5)
    # groups of two sequences: each has its own anchor (3 + 2 frames -> anchors 1 and 3)
    set_frame_groups(procs, [3, 2])
    rows = procs[0].anchor_rows(10, "cpu").tolist()
    assert rows == [1, 1, 1, 4, 4, 6, 6, 6, 9, 9]
    with pytest.raises(ValueError, match="multiple"):
        procs[0].anchor_rows(7, "cpu")
    # disabled: stock processors everywhere, output equals the base
    set_anchor_attention(unet, False)
    with torch.no_grad():
        restored = unet(x, 10, encoder_hidden_states=ctx).sample
    torch.testing.assert_close(restored, base)


def test_anchor_attention_is_equivalent_to_explicit_attention():
    """Frame f's attention output equals softmax(q_f [k_a; k_f]^T / sqrt(d)) [v_a; v_f], computed by hand."""
    from diffusers.models.attention_processor import Attention

    from hoigen.diffusion.hoidiffusion.attention import AnchorFrameAttnProcessor

    torch.manual_seed(0)
    attn = Attention(query_dim=8, heads=2, dim_head=4).eval()
    proc = AnchorFrameAttnProcessor()
    proc.groups = (3,)
    hs = torch.randn(3, 5, 8)
    with torch.no_grad():
        out = proc(attn, hs)
        q, k, v = attn.to_q(hs), attn.to_k(hs), attn.to_v(hs)
        f, a = 0, 1
        kk = torch.cat([k[a], k[f]]).view(10, 2, 4).transpose(0, 1)
        vv = torch.cat([v[a], v[f]]).view(10, 2, 4).transpose(0, 1)
        qq = q[f].view(5, 2, 4).transpose(0, 1)
        w = torch.softmax(qq @ kk.transpose(1, 2) / 2.0, dim=-1)
        ref = attn.to_out[0]((w @ vv).transpose(0, 1).reshape(5, 8))
    torch.testing.assert_close(out[f], ref, atol=1e-6, rtol=1e-5)
