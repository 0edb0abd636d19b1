"""HVG-3D ControlNet on a tiny random-initialised CogVideoX transformer (real diffusers classes, CPU).

At initialisation base + ControlNet = base exactly (each branch); gradients reach exactly the trainable parameters
(also under the base's gradient checkpointing); detaching leaves the base untouched; the point tokenizer is
invariant to the order of a frame's points and its FPS equals a brute-force reference; point tokens land where
their centres project; strict loading names missing / unexpected / mismatched keys; the real CogVideoX-5B-I2V sizes
on the meta device.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from diffusers import CogVideoXTransformer3DModel  # noqa: E402

from hoigen.diffusion.hvg3d.conditioning import (  # noqa: E402
    latent_frame_of,
    resample_points,
    tracking_video_tensor,
)
from hoigen.diffusion.hvg3d.fixtures import COGVIDEOX_5B_I2V_TRANSFORMER, tiny_transformer_config  # noqa: E402
from hoigen.diffusion.hvg3d.model import HVG3DConfig, HVG3DControlNet  # noqa: E402
from hoigen.diffusion.hvg3d.points import (  # noqa: E402
    PointTokenizer,
    farthest_point_sample,
    scatter_to_token_grid,
)
from hoigen.diffusion.hvg3d.weights import WEIGHTS_NAME, load_hvg3d, save_hvg3d  # noqa: E402

WIDTH, HEIGHT, FRAMES = 48, 32, 9  # pixels, video frames -> latent (3, 4, 6), token grid (3, 2, 3)
POINT_KW = dict(num_points=64, num_centres=16, group_size=8, point_encoder_dim=32, point_token_dim=24)
K_PIX = torch.tensor([[40.0, 0.0, 23.5], [0.0, 40.0, 15.5], [0.0, 0.0, 1.0]])


@pytest.fixture(scope="module")
def transformer():
    torch.manual_seed(0)
    model = CogVideoXTransformer3DModel(**tiny_transformer_config(WIDTH, HEIGHT, FRAMES, num_layers=3))
    return model.eval()


def _inputs(batch=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return dict(
        hidden_states=torch.randn(batch, 3, 8, HEIGHT // 8, WIDTH // 8, generator=g),
        encoder_hidden_states=torch.randn(batch, 16, 32, generator=g),
        timestep=torch.tensor([700] * batch),
    )


def _condition(seed=2):
    g = torch.Generator().manual_seed(seed)
    points = torch.randn(1, FRAMES, 64, 3, generator=g) * 0.05 + torch.tensor([0.0, 0.0, 0.4])
    return dict(
        tracking_latents=torch.randn(1, 3, 8, HEIGHT // 8, WIDTH // 8, generator=g),
        points=points,
        points_label=torch.randint(0, 2, (1, 64), generator=g),
        K=K_PIX,
    )


def _base(transformer, inputs):
    with torch.no_grad():
        return transformer(**inputs, return_dict=False)[0]


def _randomise_zero_linears(net, scale=0.05, seed=3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for linear in [net.in_linear, *net.out_linears, net.point_proj]:
            linear.weight.copy_(torch.randn(linear.weight.shape, generator=g) * scale)


@pytest.mark.parametrize("branches", ["tracking", "points", "both"])
def test_at_initialisation_the_output_equals_the_base_exactly(transformer, branches):
    inputs = _inputs()
    expected = _base(transformer, inputs)
    net = HVG3DControlNet.from_transformer(transformer, num_blocks=2, **POINT_KW)
    condition = _condition()
    if branches == "tracking":
        condition.update(points=None, points_label=None)
    elif branches == "points":
        condition.update(tracking_latents=None)
    calls = []
    net.blocks[1].register_forward_hook(lambda module, args, output: calls.append(output[0].abs().sum()))
    try:
        with torch.no_grad():
            got = net(transformer, **inputs, **condition)
    finally:
        net.detach()
    assert len(calls) == 1  # the branch really ran (the last copy was called) ...
    assert torch.equal(got, expected)  # ... and added exactly zero
    # A trained-like ControlNet (non-zero linears) changes the output: the test above can fail.
    _randomise_zero_linears(net)
    try:
        with torch.no_grad():
            changed = net(transformer, **inputs, **condition)
    finally:
        net.detach()
    assert (changed - expected).abs().max() > 1e-4


def test_copies_start_as_the_base_blocks(transformer):
    net = HVG3DControlNet.from_transformer(transformer, num_blocks=2, points=False)
    for copy_block, base_block in zip(net.blocks, transformer.transformer_blocks):
        base_state = base_block.state_dict()
        for name, value in copy_block.state_dict().items():
            assert torch.equal(value, base_state[name])
            assert value.data_ptr() != base_state[name].data_ptr()  # a copy, not shared storage


def _grads(net, transformer, checkpointing: bool):
    net.zero_grad(set_to_none=True)
    if checkpointing:
        transformer.enable_gradient_checkpointing()
    try:
        out = net(transformer, **_inputs(), **_condition())
        out.square().mean().backward()
    finally:
        if checkpointing:
            transformer.disable_gradient_checkpointing()
        net.detach()
    return {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}


def test_gradients_reach_only_the_trainable_parameters(transformer):
    net = HVG3DControlNet.from_transformer(transformer, num_blocks=2, **POINT_KW)
    _randomise_zero_linears(net)
    grads = _grads(net, transformer, checkpointing=False)
    trainable = {id(p) for p in net.trainable_parameters()}
    assert trainable == {id(p) for p in net.parameters()}
    names = dict(net.named_parameters())
    assert set(grads) == set(names), f"no gradient for {sorted(set(names) - set(grads))}"
    # every part learns: copies, in/out linears, point tokenizer and projection
    for prefix in (
        "blocks.0.",
        "blocks.1.",
        "in_linear.",
        "out_linears.1.",
        "point_tokenizer.first.",
        "point_proj.",
    ):
        assert any(g.abs().sum() > 0 for n, g in grads.items() if n.startswith(prefix)), prefix
    assert all(not p.requires_grad and p.grad is None for p in transformer.parameters())


def test_base_gradient_checkpointing_gives_the_same_gradients(transformer):
    net = HVG3DControlNet.from_transformer(transformer, num_blocks=2, **POINT_KW)
    _randomise_zero_linears(net)
    plain = _grads(net, transformer, checkpointing=False)
    checkpointed = _grads(net, transformer, checkpointing=True)
    assert set(plain) == set(checkpointed)
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-4, atol=1e-6)


def test_detaching_leaves_the_base_untouched(transformer):
    inputs = _inputs()
    before = _base(transformer, inputs)
    state = {k: v.clone() for k, v in transformer.state_dict().items()}
    net = HVG3DControlNet.from_transformer(transformer, num_blocks=3, **POINT_KW)
    _randomise_zero_linears(net)
    with torch.no_grad():
        net(transformer, **inputs, **_condition())
    # while attached, the base is not part of the ControlNet's module tree (parameters, state_dict)
    base_ids = {id(p) for p in transformer.parameters()}
    assert not any(id(p) in base_ids for p in net.trainable_parameters())
    assert not any(k.startswith("_base") for k in net.state_dict())
    net.detach()
    modules = [transformer, *transformer.transformer_blocks]
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in modules)
    assert torch.equal(_base(transformer, inputs), before)
    assert all(torch.equal(v, state[k]) for k, v in transformer.state_dict().items())
    assert not any(k.startswith("transformer") for k in net.state_dict())  # the base is not saved with it


def test_branch_switches_and_cfg_batch(transformer):
    """--no-points / --no-tracking change the output; a batch-1 condition serves the [uncond; cond] batch."""
    net = HVG3DControlNet.from_transformer(transformer, num_blocks=2, **POINT_KW)
    _randomise_zero_linears(net)
    inputs, condition = _inputs(batch=2), _condition()
    outputs = {}
    try:
        for tracking, points in ((True, True), (True, False), (False, True)):
            net.use_tracking, net.use_points = tracking, points
            with torch.no_grad():
                outputs[tracking, points] = net(transformer, **inputs, **condition)
        net.use_tracking = net.use_points = True
        single = {k: v[1:] for k, v in inputs.items()}
        with torch.no_grad():
            alone = net(transformer, **single, **condition)
    finally:
        net.detach()
    keys = list(outputs)
    for i in range(len(keys)):
        for j in range(i + 1, len(keys)):
            assert (outputs[keys[i]] - outputs[keys[j]]).abs().max() > 1e-5
    torch.testing.assert_close(alone, outputs[True, True][1:], rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------- point tokenizer


def _fps_reference(points: np.ndarray, m: int) -> list[int]:
    """Brute force: start at the point farthest from the centroid, then argmax of the min distance to the set."""
    d0 = ((points - points.mean(0)) ** 2).sum(1)
    chosen = [int(np.argmax(d0))]
    while len(chosen) < m:
        best, best_d = -1, -1.0
        for i in range(len(points)):
            d = min(((points[i] - points[j]) ** 2).sum() for j in chosen)
            if d > best_d:
                best, best_d = i, d
        chosen.append(best)
    return chosen


def test_fps_equals_a_brute_force_reference():
    g = torch.Generator().manual_seed(5)
    points = torch.rand(3, 50, 3, generator=g, dtype=torch.float64)
    got = farthest_point_sample(points, 12)
    for b in range(3):
        assert got[b].tolist() == _fps_reference(points[b].numpy(), 12)
    with pytest.raises(ValueError, match="cannot sample 51 centres from 50 points"):
        farthest_point_sample(points, 51)


def test_point_tokens_are_invariant_to_the_order_of_a_frames_points():
    torch.manual_seed(0)
    tokenizer = PointTokenizer(num_centres=16, group_size=8, encoder_dim=32, token_dim=24).eval()
    g = torch.Generator().manual_seed(6)
    points = torch.rand(2, 64, 3, generator=g)
    labels = torch.randint(0, 2, (2, 64), generator=g)
    perm = torch.randperm(64, generator=g)
    with torch.no_grad():
        tokens, centres = tokenizer(points, labels)
        tokens_p, centres_p = tokenizer(points[:, perm], labels[:, perm])
    torch.testing.assert_close(tokens_p, tokens, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(centres_p, centres)
    # and the tokens do depend on the geometry and on the labels
    with torch.no_grad():
        assert (tokenizer(points, 1 - labels)[0] - tokens).abs().max() > 1e-4
        assert (tokenizer(points * 1.5, labels)[0] - tokens).abs().max() > 1e-4


def test_point_tokens_land_where_their_centres_project():
    # Three tokens: two in video frame 1 (latent frame 1) that project into token cell (row 1, col 2), and one in
    # frame 5 (latent frame 2) behind the camera (dropped).
    z = 0.5
    uv = torch.tensor([[40.0, 20.0], [33.0, 17.0], [10.0, 10.0]])  # pixels; cell = 16 px
    xyz = torch.stack(
        [(uv[:, 0] - K_PIX[0, 2]) * z / 40.0, (uv[:, 1] - K_PIX[1, 2]) * z / 40.0, torch.full((3,), z)], dim=1
    )
    xyz[2, 2] = -z
    grid_tokens = torch.zeros(1, 9, 2, 4)
    grid_centres = torch.zeros(1, 9, 2, 3)
    grid_centres[..., 2] = -1.0  # every other slot: behind the camera
    grid_tokens[0, 1, 0] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    grid_centres[0, 1, 0] = xyz[0]
    grid_tokens[0, 4, 1] = torch.tensor([3.0, 2.0, 1.0, 0.0])  # frame 4 -> latent frame 1 as well
    grid_centres[0, 4, 1] = xyz[1]
    grid_tokens[0, 5, 0] = 9.0
    grid_centres[0, 5, 0] = xyz[2]
    out = scatter_to_token_grid(grid_tokens, grid_centres, K_PIX, (3, 2, 3), (16.0, 16.0))
    expected = torch.zeros(1, 18, 4)
    expected[0, (1 * 2 + 1) * 3 + 2] = torch.tensor([2.0, 2.0, 2.0, 2.0])  # mean of the two
    torch.testing.assert_close(out, expected)
    assert latent_frame_of(np.arange(9)).tolist() == [0, 1, 1, 1, 1, 2, 2, 2, 2]


def test_tracking_tensor_range_and_point_resampling():
    frames = np.zeros((9, 4, 6, 3), dtype=np.uint8)
    frames[0, 0, 0] = 255
    tensor = tracking_video_tensor(frames)
    assert tensor.shape == (1, 3, 9, 4, 6) and tensor.min() == -1.0 and tensor.max() == 1.0
    with pytest.raises(ValueError, match="uint8"):
        tracking_video_tensor(frames.astype(np.float32))
    points = np.random.default_rng(0).normal(size=(9, 10, 3))
    labels = (np.arange(10) % 2).astype(np.uint8)
    out, out_labels = resample_points(points, labels, 25)
    index = np.round(np.linspace(0, 9, 25)).astype(int)
    assert out.shape == (9, 25, 3) and np.array_equal(out, points[:, index].astype(np.float32))
    assert np.array_equal(out_labels, labels[index])


# ------------------------------------------------------------------------------------------------------ weights


def test_strict_loading_round_trip_and_errors(transformer, tmp_path):
    net = HVG3DControlNet.from_transformer(transformer, num_blocks=2, **POINT_KW)
    _randomise_zero_linears(net)
    folder = save_hvg3d(net, tmp_path / "ok")
    loaded = load_hvg3d(folder)
    assert loaded.config == net.config
    for name, value in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value)

    from safetensors.torch import load_file, save_file

    state = load_file(str(folder / WEIGHTS_NAME))
    state.pop("out_linears.1.bias")
    state["extra.weight"] = torch.zeros(2)
    state["in_linear.weight"] = torch.zeros(3, 3)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text((folder / "config.json").read_text())
    save_file(state, str(bad / WEIGHTS_NAME))
    with pytest.raises(ValueError) as error:
        load_hvg3d(bad)
    message = str(error.value)
    assert "missing keys: out_linears.1.bias" in message
    assert "unexpected keys: extra.weight" in message
    assert "in_linear.weight (3, 3) (expected (32, 32))" in message

    wrong_k = tmp_path / "k3"
    wrong_k.mkdir()
    config = json.loads((folder / "config.json").read_text())
    config["num_blocks"] = 3
    (wrong_k / "config.json").write_text(json.dumps(config))
    (wrong_k / WEIGHTS_NAME).write_bytes((folder / WEIGHTS_NAME).read_bytes())
    with pytest.raises(ValueError, match=r"missing keys: blocks\.2\."):
        load_hvg3d(wrong_k)
    with pytest.raises(FileNotFoundError, match="--hvg3d"):
        load_hvg3d(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_hvg3d(tmp_path / "empty")
    with pytest.raises(ValueError, match="width 32 with >= 4 blocks"):
        HVG3DControlNet(HVG3DConfig(**{**net.config.to_dict(), "num_blocks": 4})).check_base(transformer)


def test_real_cogvideox_5b_i2v_sizes_on_the_meta_device():
    with torch.device("meta"):
        base = CogVideoXTransformer3DModel(**COGVIDEOX_5B_I2V_TRANSFORMER)
        net = HVG3DControlNet.from_transformer(base, num_blocks=18)
    total = sum(p.numel() for p in base.parameters())
    block = sum(p.numel() for p in base.transformer_blocks[0].parameters())
    assert round(total / 1e9, 2) == 5.57
    assert round(block / 1e6, 1) == 132.2
    copies = sum(p.numel() for p in net.blocks.parameters())
    linears = sum(p.numel() for n, p in net.named_parameters() if n.startswith(("in_linear", "out_linears")))
    points = sum(p.numel() for n, p in net.named_parameters() if n.startswith("point_"))
    assert copies == 18 * block
    assert linears == 19 * (3072 * 3072 + 3072)
    assert sum(p.numel() for p in net.trainable_parameters()) == copies + linears + points
    assert 2.5e9 < copies + linears + points < 2.6e9
