"""HOIDiffusion weights: released -> converted round trip on tiny real models, strict errors, the adapter key map,
CLIP's vocabulary, header checks, discovery and caching, the CLI and doctor. Everything offline and on CPU."""

from __future__ import annotations

import importlib.util
import json
import os
import sys

import numpy as np
import pytest

pytest.importorskip("diffusers")
pytest.importorskip("transformers")
import torch  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from hoigen.diffusion.hoidiffusion import fixtures, weights  # noqa: E402
from hoigen.diffusion.hoidiffusion.sd_configs import (  # noqa: E402
    SD14_ADAPTER,
    bytes_to_unicode,
    clip_vocabulary,
    sd14_configs,
    write_clip_tokenizer,
    write_tokenizer,
)
from hoigen.diffusion.hoidiffusion.weights import (  # noqa: E402
    ADAPTER_NAMES,
    RELEASED_ADAPTER_FILE,
    RELEASED_SD_FILE,
    check_released,
    check_weights,
    convert_released,
    load_components,
    map_adapter_key,
    resolve_weights,
)

SEED = 3


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models: one intra-op thread (on a busy 2-core machine, two threads are ~30x slower for 8x8 convs)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    return fixtures.write_tiny_released(tmp_path_factory.mktemp("hoid") / "released", seed=SEED)


@pytest.fixture(scope="module")
def converted(released, tmp_path_factory):
    out = tmp_path_factory.mktemp("hoid") / "converted"
    record = convert_released(released, out)
    return out, record


@pytest.fixture(scope="module")
def direct():
    return fixtures.tiny_models(SEED)


def _copy_released(released, tmp_path):
    import shutil

    dst = tmp_path / "src"
    shutil.copytree(released, dst)
    return dst


def _state_equal(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- the round trip --------------------------------------------------------------------------------------------


def test_conversion_round_trip_is_exact(converted, direct, released):
    out, record = converted
    assert (out / "model_index.json").is_file() and (out / "tokenizer" / "vocab.json").is_file()
    for name in ADAPTER_NAMES:  # each adapter saved on its own, in safetensors
        assert (out / "adapters" / name / "diffusion_pytorch_model.safetensors").is_file()
    parts = load_components(resolve_weights(out))
    for component in ("unet", "vae", "text_encoder"):
        assert _state_equal(parts[component], direct[component]), component
    assert len(parts["adapters"]) == 3
    for got, want in zip(parts["adapters"], direct["adapters"]):
        assert _state_equal(got, want)
        assert next(got.parameters()).dtype == torch.float32
    # the record pins inputs and outputs by sha256
    assert record["inputs"][RELEASED_SD_FILE]["sha256"] == weights.file_sha256(released / RELEASED_SD_FILE)
    assert record["outputs"]["unet/diffusion_pytorch_model.safetensors"] == weights.file_sha256(
        out / "unet" / "diffusion_pytorch_model.safetensors"
    )
    assert json.loads((out / "hoigen_weights.json").read_text()) == record
    assert sorted(record["ignored_keys"]["examples"]) == sorted(
        ["alphas_cumprod", "betas", "cond_stage_model.transformer.text_model.embeddings.position_ids"]
    )
    # the fixture written directly in the converted layout holds the very same weights
    assert record["parameters"]["unet"] == sum(p.numel() for p in direct["unet"].parameters())


def test_diffusers_single_file_loader_agrees(released, direct):
    """diffusers' own offline single-file route, given hoigen's config folder, reads the same weights."""
    from diffusers import MultiAdapter, StableDiffusionAdapterPipeline

    pipe = StableDiffusionAdapterPipeline.from_single_file(
        str(released / RELEASED_SD_FILE),
        config=str(released / "hoigen_sd_config"),
        adapter=MultiAdapter(direct["adapters"]),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
        local_files_only=True,
    )
    for component in ("unet", "vae", "text_encoder"):
        assert _state_equal(getattr(pipe, component), direct[component]), component


def _generate(parts, conditions):
    from diffusers import MultiAdapter, StableDiffusionAdapterPipeline

    pipe = StableDiffusionAdapterPipeline(
        vae=parts["vae"],
        text_encoder=parts["text_encoder"],
        tokenizer=parts["tokenizer"],
        unet=parts["unet"],
        adapter=MultiAdapter(parts["adapters"]),
        scheduler=parts["scheduler"],
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe(
        "A hand is grasping a mug",
        image=conditions,
        height=64,
        width=64,
        num_inference_steps=2,
        guidance_scale=7.5,
        negative_prompt="lowres, bad anatomy, bad hands",
        adapter_conditioning_scale=[1.0, 1.0, 1.0],
        generator=torch.Generator().manual_seed(42),
        output_type="np",
    ).images


def test_pipeline_from_converted_weights_equals_the_direct_one(converted, direct, tmp_path):
    from transformers import CLIPTokenizer

    from hoigen.diffusion.hoidiffusion.weights import make_scheduler

    out, _ = converted
    rng = np.random.default_rng(0)
    conditions = [torch.from_numpy(rng.random((1, 3, 64, 64), dtype=np.float32)) for _ in ADAPTER_NAMES]
    write_tokenizer(tmp_path / "tok", *fixtures.tiny_tokenizer())
    built = {
        **{k: direct[k] for k in ("unet", "vae", "text_encoder", "adapters")},
        "tokenizer": CLIPTokenizer.from_pretrained(tmp_path / "tok", model_max_length=77),
        "scheduler": make_scheduler(),
    }
    want = _generate(built, conditions)
    got = _generate(load_components(resolve_weights(out)), conditions)
    assert want.shape == (1, 64, 64, 3) and want.std() > 1e-3
    np.testing.assert_array_equal(got, want)
    # the fixture written in the converted layout by the libraries' own save_pretrained gives the same image
    tiny = fixtures.write_tiny_hoidiffusion(tmp_path / "tiny", seed=SEED)
    np.testing.assert_array_equal(_generate(load_components(resolve_weights(tiny)), conditions), want)


def test_scheduler_has_the_original_timesteps():
    scheduler = weights.make_scheduler()
    scheduler.set_timesteps(50)
    steps = scheduler.timesteps.tolist()
    assert len(steps) == 50 and steps[:2] == [981, 961] and steps[-2:] == [21, 1]
    assert type(scheduler).__name__ == "DDIMScheduler" and not scheduler.config.clip_sample


# --- the adapter key map and the real-size architecture -----------------------------------------------------


def test_adapter_key_map():
    assert map_adapter_key("conv_in.weight") == "adapter.conv_in.weight"
    assert map_adapter_key("body.5.block2.bias") == "adapter.body.2.resnets.1.block2.bias"
    assert map_adapter_key("body.0.block1.weight") == "adapter.body.0.resnets.0.block1.weight"
    assert map_adapter_key("body.2.in_conv.weight") == "adapter.body.1.in_conv.weight"
    assert map_adapter_key("body.4.in_conv.bias") == "adapter.body.2.in_conv.bias"
    for bad in ("body.3.in_conv.weight", "body.0.skep.weight", "conv_out.weight", "body.x.block1.weight"):
        with pytest.raises(ValueError, match="not a key of a full T2I-Adapter"):
            map_adapter_key(bad)
    # the released layout of the real adapter (38 tensors) maps onto diffusers' full T2IAdapter exactly
    from hoigen.diffusion.hoidiffusion.ldm_keys import adapter_released_key

    shapes = weights._shapes(weights._meta_model("adapter", SD14_ADAPTER))
    released = {adapter_released_key(k, 2): s for k, s in shapes.items()}
    assert len(released) == 38
    assert released["conv_in.weight"] == (320, 192, 3, 3)
    assert released["body.2.in_conv.weight"] == (640, 320, 1, 1)
    assert released["body.4.in_conv.weight"] == (1280, 640, 1, 1)
    assert {k for k in released if "in_conv" in k} == {
        f"body.{i}.in_conv.{p}" for i in (2, 4) for p in ("weight", "bias")
    }
    assert all(released[f"body.{i}.block1.weight"][2:] == (3, 3) for i in range(8))
    assert all(released[f"body.{i}.block2.weight"][2:] == (1, 1) for i in range(8))
    assert {map_adapter_key(k): s for k, s in released.items()} == shapes
    # the combined file's prefixes; a DDP 'module.' or an extra 'adapter.' (before or after the prefix) is dropped
    state = {}
    for i, prefix in enumerate(weights.RELEASED_PREFIXES.values()):
        wrap = ("module.{p}", "adapter.{p}", "{p}adapter.")[i].format(p=prefix)
        state.update({wrap + k: torch.zeros(1) for k in released})
    split, sources = weights.split_released_adapters(state, "model_condition.pth")
    assert all(set(split[n]) == set(shapes) for n in ADAPTER_NAMES)
    assert sources["skeleton"]["adapter.conv_in.weight"] == "module.pose_ada.conv_in.weight"
    assert sources["mask"]["adapter.body.3.resnets.1.block2.bias"] == "mask_ada.adapter.body.7.block2.bias"
    with pytest.raises(ValueError, match=r"model_condition\.pth: unexpected key 'cond_ada\.conv_in\.weight'"):
        weights.split_released_adapters(
            {**state, "cond_ada.conv_in.weight": torch.zeros(1)}, "model_condition.pth"
        )


def test_real_size_sd14_architecture_on_meta():
    """SD-1.4's published parameter counts, and diffusers' converters accept LDM names of the real-size models."""
    from hoigen.diffusion.hoidiffusion.ldm_keys import ldm_key, vae_ldm_value

    configs = sd14_configs()
    counts = {c: weights.count_parameters(c, configs[c]) for c in ("unet", "vae", "text_encoder", "adapter")}
    assert counts == {
        "unet": 859_520_964,
        "vae": 83_653_863,
        "text_encoder": 123_060_480,
        "adapter": 77_369_280,
    }
    state = {}
    for component in ("unet", "vae", "text_encoder"):
        model = weights._meta_model(component, configs[component])
        for key, value in model.state_dict().items():
            state[ldm_key(component, key, configs[component])] = vae_ldm_value(key, value)
    converted, ignored = weights.convert_ldm_checkpoint(state, "meta-sd14.ckpt", configs)
    assert ignored == [] and sum(v.numel() for v in converted["unet"].values()) == counts["unet"]


# --- clear errors -------------------------------------------------------------------------------------------


def test_missing_adapter_key_is_named(released, tmp_path):
    src = _copy_released(released, tmp_path)
    state = torch.load(src / RELEASED_ADAPTER_FILE, weights_only=True)
    del state["mask_ada.body.3.block1.weight"]
    torch.save(state, src / RELEASED_ADAPTER_FILE)
    with pytest.raises(
        ValueError, match=r"model_condition\.pth.*mask adapter.*'mask_ada\.body\.3\.block1\.weight'"
    ):
        convert_released(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]  # no half-written folder left behind


def test_renamed_and_misshapen_keys_are_named(released, tmp_path):
    src = _copy_released(released, tmp_path)
    state = torch.load(src / RELEASED_SD_FILE, weights_only=True)
    key = "model.diffusion_model.input_blocks.1.0.in_layers.0.weight"
    state[key.replace("in_layers", "in_layerz")] = state.pop(key)
    torch.save(state, src / RELEASED_SD_FILE)
    with pytest.raises(ValueError, match=r"model_sd_finetuned\.ckpt \(UNet.*in_layers\.0\.weight") as info:
        convert_released(src, tmp_path / "out")
    assert "in_layerz" in str(info.value)

    adapters = torch.load(src / RELEASED_ADAPTER_FILE, weights_only=True)
    adapters["depth_ada.conv_in.weight"] = torch.zeros(32, 3, 3, 3)
    torch.save(adapters, src / RELEASED_ADAPTER_FILE)
    with pytest.raises(
        ValueError,
        match=r"normal adapter.*'depth_ada\.conv_in\.weight' is \[32, 3, 3, 3\].*\[32, 192, 3, 3\]",
    ):
        convert_released(src, tmp_path / "out")


def test_wrong_architecture_and_wrong_files_are_refused(released, tmp_path):
    import shutil

    src = _copy_released(released, tmp_path)
    shutil.rmtree(src / "hoigen_sd_config")  # now the checkpoint must be SD-1.4, and it is not
    with pytest.raises(ValueError, match=r"model_condition\.pth.*T2I-Adapter \(channels \[320, 640"):
        convert_released(src, tmp_path / "out")
    shutil.copytree(released / "hoigen_sd_config", src / "hoigen_sd_config")
    # the two files swapped
    shutil.copy(released / RELEASED_ADAPTER_FILE, src / RELEASED_SD_FILE)
    with pytest.raises(ValueError, match=r"model_sd_finetuned\.ckpt holds T2I-Adapters"):
        convert_released(src, tmp_path / "out")
    # truncated download / not a checkpoint at all
    data = (released / RELEASED_SD_FILE).read_bytes()
    (src / RELEASED_SD_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"model_sd_finetuned\.ckpt is not a readable PyTorch checkpoint"):
        convert_released(src, tmp_path / "out")
    (src / RELEASED_SD_FILE).write_text("<html>Google Drive: virus scan warning</html>")
    with pytest.raises(ValueError, match=r"model_sd_finetuned\.ckpt is not a PyTorch checkpoint.*HTML"):
        convert_released(src, tmp_path / "out")
    (src / RELEASED_SD_FILE).unlink()
    with pytest.raises(
        FileNotFoundError, match=r"model_sd_finetuned\.ckpt not found.*Mq-Zhang1/HOIDiffusion"
    ):
        convert_released(src, tmp_path / "out")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(FileExistsError, match="not empty"):
        convert_released(released, tmp_path / "full")


class _Exploit:
    """Pickles to a call of os.system: what a malicious checkpoint does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_runs_code_is_refused_not_executed(released, tmp_path):
    src = _copy_released(released, tmp_path)
    marker = tmp_path / "pwned"
    state = torch.load(src / RELEASED_ADAPTER_FILE, weights_only=True)
    state["payload"] = _Exploit(marker)
    torch.save(state, src / RELEASED_ADAPTER_FILE)
    with pytest.raises(ValueError, match=r"model_condition\.pth: refused .*weights_only=True"):
        convert_released(src, tmp_path / "out")
    with pytest.raises(ValueError, match="refused"):
        check_released(src)
    assert not marker.exists()


# --- CLIP's vocabulary --------------------------------------------------------------------------------------


@pytest.mark.skipif(importlib.util.find_spec("open_clip") is None, reason="needs open-clip-torch (--no-deps)")
def test_clip_vocabulary_and_tokenizer(tmp_path):
    from transformers import CLIPTokenizer

    table = bytes_to_unicode()
    assert len(table) == 256 and len(set(table.values())) == 256
    assert table[ord("a")] == "a" and table[ord(" ")] == "Ġ"  # space is the 33rd remapped byte: chr(256 + 32)
    vocab, merges = clip_vocabulary()
    assert len(vocab) == 49408 and len(merges) == 48894
    assert vocab["!"] == 0 and vocab["a</w>"] == 320 and vocab["<|startoftext|>"] == 49406
    assert vocab["<|endoftext|>"] == 49407
    write_clip_tokenizer(tmp_path / "tok")
    tok = CLIPTokenizer.from_pretrained(tmp_path / "tok", local_files_only=True)
    assert len(tok) == 49408 and tok.model_max_length == 77
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (49406, 49407, 49407)
    # CLIP's published example encoding
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    ids = tok("A hand is grasping a mug").input_ids
    assert ids[0] == 49406 and ids[-1] == 49407 and ids[1] == ids[-3] == 320
    pieces = [tok.convert_ids_to_tokens(i) for i in ids[1:-1]]
    assert "".join(pieces).replace("</w>", " ").split() == "a hand is grasping a mug".split()
    assert pieces[1] == "hand</w>" and vocab["hand</w>"] == ids[2]
    assert tok.decode(ids, skip_special_tokens=True) == "a hand is grasping a mug"
    padded = tok("a cat", padding="max_length", max_length=77, truncation=True).input_ids
    assert len(padded) == 77 and padded[:4] == [49406, 320, 2368, 49407] and set(padded[3:]) == {49407}
    assert "open_clip" not in sys.modules  # the vocabulary is package data, read without importing open_clip


# --- header checks, discovery, cache ------------------------------------------------------------------------


def test_check_weights_counts_and_tampered_headers(converted, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    out, record = converted
    report = check_weights(out)
    assert report["kind"] == "converted" and report["tokenizer"]["tokens"] == len(
        fixtures.tiny_tokenizer()[0]
    )
    assert report["unet"]["parameters"] == record["parameters"]["unet"]
    assert report["parameters"] == sum(record["parameters"].values())

    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    path = bad / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(path)
    state["conv_out.weightX"] = state.pop("conv_out.weight")
    save_file(state, path)
    with pytest.raises(ValueError, match=r"unet/diffusion_pytorch_model\.safetensors.*'conv_out\.weight'"):
        check_weights(bad)
    with pytest.raises(
        ValueError, match=r"unet/diffusion_pytorch_model\.safetensors changed since hoigen_weights"
    ):
        resolve_weights(bad)  # the record's sha256 catches any changed file
    with pytest.raises(ValueError, match=r"conv_out\.weight"):
        load_components(weights.HOIDiffusionWeights(root=bad, files={}))  # loading is strict on its own too

    shutil.copy(out / "unet" / "diffusion_pytorch_model.safetensors", path)
    adapter = bad / "adapters" / "mask" / "diffusion_pytorch_model.safetensors"
    data = adapter.read_bytes()
    adapter.write_bytes(data[:-100])
    with pytest.raises(ValueError, match=r"adapters/mask/diffusion_pytorch_model\.safetensors.*truncated"):
        check_weights(bad)
    adapter.write_bytes(data)
    vocab = json.loads((bad / "tokenizer" / "vocab.json").read_text())
    vocab.pop(next(iter(vocab)))
    (bad / "tokenizer" / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(ValueError, match="does not belong to this model"):
        check_weights(bad)


def test_resolve_weights_discovery_cache_and_sd_folder(released, converted, direct, tmp_path, monkeypatch):
    monkeypatch.delenv(weights.ENV_HOIDIFFUSION, raising=False)
    monkeypatch.delenv(weights.ENV_SD, raising=False)
    monkeypatch.setenv(weights.ENV_CACHE, str(tmp_path / "cache"))
    with pytest.raises(
        FileNotFoundError, match=r"--hoidiffusion DIR.*HOIGEN_HOIDIFFUSION_DIR.*model_condition\.pth"
    ):
        resolve_weights()
    with pytest.raises(FileNotFoundError, match="neither a converted HOIDiffusion folder"):
        resolve_weights(tmp_path)

    # released files: converted once into the cache, then reused
    monkeypatch.setenv(weights.ENV_HOIDIFFUSION, str(released))
    first = resolve_weights()
    assert first.root.parent == tmp_path / "cache" / "hoidiffusion" and first.sd is None
    stamp = (first.root / "hoigen_weights.json").stat().st_mtime_ns
    second = resolve_weights()
    assert second == first and (second.root / "hoigen_weights.json").stat().st_mtime_ns == stamp
    out, _ = converted
    assert first.files == resolve_weights(out).files  # same bytes as the explicit conversion
    assert first.files["adapters/normal/diffusion_pytorch_model.safetensors"] == weights.file_sha256(
        out / "adapters" / "normal" / "diffusion_pytorch_model.safetensors"
    )

    # --sd: SD parts from a diffusers folder, adapters from the HOIDiffusion folder (adapters-only conversion)
    with_sd = resolve_weights(released, sd=out)
    assert with_sd.sd == out and (with_sd.root / "adapters").is_dir() and not (with_sd.root / "unet").exists()
    assert (
        with_sd.files["sd:unet/diffusion_pytorch_model.safetensors"]
        == first.files["unet/diffusion_pytorch_model.safetensors"]
    )
    parts = load_components(with_sd)  # the adapters-only folder has no unet/: it can only come from --sd
    assert _state_equal(parts["unet"], direct["unet"])
    assert _state_equal(parts["adapters"][2], direct["adapters"][2])
    adapters_only = with_sd.root
    with pytest.raises(FileNotFoundError, match="only the adapters: pass --sd DIR"):
        resolve_weights(adapters_only)
    with pytest.raises(FileNotFoundError, match="not a diffusers SD-1.x folder"):
        resolve_weights(out, sd=tmp_path)


# --- command line and doctor --------------------------------------------------------------------------------


def test_cli_fixture_and_convert(tmp_path, released):
    from hoigen.cli import main

    runner = CliRunner()
    result = runner.invoke(main, ["fixture", "hoidiffusion", str(tmp_path / "tiny"), "--seed", "5"])
    assert result.exit_code == 0, result.output
    assert "RANDOM" in result.output
    record = json.loads((tmp_path / "tiny" / "hoigen_weights.json").read_text())
    assert record["random"] is True and "noise" in (tmp_path / "tiny" / "README.txt").read_text()
    assert check_weights(tmp_path / "tiny")["kind"] == "converted"

    result = runner.invoke(main, ["convert", "hoidiffusion", str(released), str(tmp_path / "conv")])
    assert result.exit_code == 0, result.output
    assert "hoigen_weights.json" in result.output and (tmp_path / "conv" / "adapters" / "mask").is_dir()
    result = runner.invoke(main, ["convert", "hoidiffusion", str(tmp_path / "tiny"), str(tmp_path / "conv2")])
    assert result.exit_code == 1 and "model_condition.pth not found" in result.output


def test_doctor_checks_the_folder(converted, released, tmp_path, monkeypatch):
    from hoigen.doctor import check_hoidiffusion

    out, _ = converted
    monkeypatch.delenv(weights.ENV_SD, raising=False)
    monkeypatch.setenv(weights.ENV_HOIDIFFUSION, str(out))
    (check,) = check_hoidiffusion()
    assert check.ok is True and "keys and shapes match" in check.detail
    monkeypatch.setenv(weights.ENV_HOIDIFFUSION, str(released))
    (check,) = check_hoidiffusion()
    assert check.ok is True and "dry run" in check.detail
    src = _copy_released(released, tmp_path)
    state = torch.load(src / RELEASED_ADAPTER_FILE, weights_only=True)
    state.pop("pose_ada.conv_in.bias")
    torch.save(state, src / RELEASED_ADAPTER_FILE)
    monkeypatch.setenv(weights.ENV_HOIDIFFUSION, str(src))
    (check,) = check_hoidiffusion()
    assert check.ok is False and "pose_ada.conv_in.bias" in check.detail


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_load_components_in_half_precision_on_cuda(converted):
    """fp16 on the GPU: every model, the three adapters included (cast explicitly), on the device in fp16."""
    out, _ = converted
    parts = load_components(resolve_weights(out), device="cuda", dtype=torch.float16)
    for model in (parts["unet"], parts["vae"], parts["text_encoder"], *parts["adapters"]):
        assert {(p.device.type, p.dtype) for p in model.parameters()} == {("cuda", torch.float16)}
    conditions = [torch.rand(1, 3, 64, 64, device="cuda", dtype=torch.float16) for _ in ADAPTER_NAMES]
    image = _generate(parts, conditions)
    assert image.shape == (1, 64, 64, 3) and np.isfinite(image).all()
