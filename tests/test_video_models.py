"""AnimateDiff models in seppo.core.models: loading an SD folder plus a motion adapter, adapters that do not fit, the
training scopes and LoRA sides, LoRA weights that diffusers' pipelines load back, and per-frame text embeddings."""
import copy
import json
import shutil

import pytest
import torch
from diffusers import AnimateDiffPipeline, DiffusionPipeline, MotionAdapter, StableDiffusionPipeline, UNetMotionModel
from safetensors.torch import load_file, save_file

from seppo.core.models import (LORA_SIDES, LORA_TARGETS, LORA_WEIGHTS_FILE, TRAIN_SCOPES, check_motion_adapter,
                          encode_prompt, frame_embeds, inflate_unet, load_components, load_motion_adapter,
                          lora_target_modules, motion_adapter_mismatch, save_components, save_lora, set_train_scope,
                          tiny_components, tiny_motion_adapter, tiny_video_components)

F = 4


@pytest.fixture(scope="module")
def image():
    return tiny_components(0)


@pytest.fixture(scope="module")
def video():
    return tiny_video_components(0)


@pytest.fixture(scope="module")
def folders(tmp_path_factory, image, video):
    """An SD1.5 folder, a motion-adapter folder and a saved motion model (read-only: tests copy what they change)."""
    root = tmp_path_factory.mktemp("models")
    save_components(image, root / "sd15")
    tiny_motion_adapter(1).save_pretrained(root / "adapter")
    save_components(video, root / "video")
    return root


@pytest.fixture(scope="module")
def inputs(image):
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 4, F, 8, 8, generator=g), torch.tensor([500, 500])
    e = encode_prompt(image.tokenizer, image.text_encoder, ["a red circle moving left", "a blue square moving up"])
    return x, t, e


def forward(unet, inputs):
    x, t, e = inputs
    with torch.no_grad(): return unet(x, t, encoder_hidden_states=frame_embeds(unet, e, x.shape[2])).sample


def adapter(**changes):
    """`tiny_motion_adapter`'s settings with `changes`."""
    return MotionAdapter(**{k: v for k, v in tiny_motion_adapter(1).config.items() if not k.startswith("_")} | changes)


def trainable(unet):
    return {n: p for n, p in unet.named_parameters() if p.requires_grad}


# --- loading ---------------------------------------------------------------------------------------------------

def test_sd_folder_plus_adapter_folder_is_the_inflated_model(folders, image, inputs):
    comps = load_components(folders / "sd15", motion_adapter=folders / "adapter")
    assert isinstance(comps.unet, UNetMotionModel) and not comps.unet.training
    expected = inflate_unet(image.unet, tiny_motion_adapter(1), zero_motion=False)
    assert set(comps.unet.state_dict()) == set(expected.state_dict())
    for k, w in expected.state_dict().items(): assert torch.equal(comps.unet.state_dict()[k], w), k
    assert torch.equal(forward(comps.unet, inputs), forward(expected, inputs))
    assert comps.vae is not None and comps.text_encoder is not None


def test_adapter_loads_in_the_asked_dtype(folders):
    comps = load_components(folders / "sd15", motion_adapter=folders / "adapter", dtype=torch.bfloat16, device="cpu")
    assert (type(comps.unet), comps.unet.dtype, comps.unet.device.type) == (UNetMotionModel, torch.bfloat16, "cpu")
    assert load_motion_adapter(folders / "adapter", dtype=torch.bfloat16).dtype == torch.bfloat16


def test_saved_motion_folder_loads_without_an_adapter(folders, video, inputs):
    comps = load_components(folders / "video")
    assert isinstance(comps.unet, UNetMotionModel)
    assert torch.equal(forward(comps.unet, inputs), forward(video.unet, inputs))


def test_animatediff_pipeline_loads_save_components_folder(folders, video, inputs):
    pipe = AnimateDiffPipeline.from_pretrained(folders / "video")
    assert type(pipe.unet) is UNetMotionModel and pipe.motion_adapter is None
    assert torch.equal(forward(pipe.unet, inputs), forward(video.unet, inputs))
    assert type(DiffusionPipeline.from_pretrained(folders / "video")).__name__ == "AnimateDiffPipeline"


def test_folder_written_by_animatediff_pipeline_loads(tmp_path, image, inputs):
    """diffusers' own AnimateDiffPipeline folder: a motion UNet and the adapter it was made from, both saved."""
    ad = tiny_motion_adapter(1)
    pipe = AnimateDiffPipeline(vae=image.vae, text_encoder=image.text_encoder, tokenizer=image.tokenizer,
                               unet=copy.deepcopy(image.unet), motion_adapter=ad, scheduler=image.scheduler)
    pipe.save_pretrained(tmp_path / "pipe")
    assert json.loads((tmp_path / "pipe" / "model_index.json").read_text())["motion_adapter"] == ["diffusers", "MotionAdapter"]
    comps = load_components(tmp_path / "pipe")
    assert isinstance(comps.unet, UNetMotionModel)
    assert torch.equal(forward(comps.unet, inputs), forward(pipe.unet, inputs))


def test_model_index_listing_an_adapter_beside_an_image_unet_inflates_it(tmp_path, folders, image, inputs):
    model = tmp_path / "model"
    shutil.copytree(folders / "sd15", model)
    shutil.copytree(folders / "adapter", model / "motion_adapter")
    index = json.loads((model / "model_index.json").read_text())
    (model / "model_index.json").write_text(json.dumps(index | {"motion_adapter": ["diffusers", "MotionAdapter"]}))
    comps = load_components(model)
    expected = inflate_unet(image.unet, tiny_motion_adapter(1), zero_motion=False)
    assert torch.equal(forward(comps.unet, inputs), forward(expected, inputs))
    assert type(load_components(folders / "sd15").unet).__name__ == "UNet2DConditionModel"  # none listed: image model


@pytest.mark.parametrize("save", [dict(safe_serialization=False), dict(max_shard_size="100KB")], ids=["bin", "sharded"])
def test_adapter_weights_as_bin_or_shards_load(tmp_path, save):
    ad = tiny_motion_adapter(1)
    ad.save_pretrained(tmp_path / "ad", **save)
    names = sorted(p.name for p in (tmp_path / "ad").iterdir())
    assert "diffusion_pytorch_model.safetensors" not in names, names
    back = load_motion_adapter(tmp_path / "ad")
    for k, w in ad.state_dict().items(): assert torch.equal(back.state_dict()[k], w), k


def test_sharded_adapter_with_a_shard_missing(tmp_path):
    tiny_motion_adapter(1).save_pretrained(tmp_path / "ad", max_shard_size="100KB")
    shard = sorted((tmp_path / "ad").glob("*-of-*.safetensors"))[0]
    shard.unlink()
    with pytest.raises(FileNotFoundError, match=f"weight shards it lists are missing \\({shard.name}\\)"):
        load_motion_adapter(tmp_path / "ad")


# --- adapters that do not fit ----------------------------------------------------------------------------------

@pytest.mark.parametrize("changes,expected", [
    (dict(block_out_channels=(32, 128)), "block_out_channels (32, 128) vs the UNet's (32, 64); of the 162 motion-module "
     "weights this UNet needs, 81 of another shape (down_blocks.1.motion_modules.0.norm.bias: expected (64,), found (128,)"),
    (dict(motion_layers_per_block=2), "motion_layers_per_block 2 vs the UNet's 1; of the 162 motion-module weights this "
     "UNet needs, 108 unexpected (down_blocks.0.motion_modules.1.norm.bias"),
    (dict(motion_layers_per_block=(1, 2)), "motion_layers_per_block (1, 2) vs the UNet's 1; of the 162 motion-module "
     "weights this UNet needs, 54 unexpected (down_blocks.1.motion_modules.1."),
    (dict(block_out_channels=(32,)), "block_out_channels (32,) vs the UNet's (32, 64); of the 162 motion-module weights "
     "this UNet needs, 81 missing (down_blocks.1.motion_modules.0.norm.bias"),
    (dict(block_out_channels=(32, 64, 64)), "81 unexpected (down_blocks.2.motion_modules.0.norm.bias"),
])
def test_mismatched_adapter_names_settings_keys_and_shapes(image, changes, expected):
    with pytest.raises(ValueError) as e: inflate_unet(image.unet, adapter(**changes))
    assert str(e.value).startswith("the motion adapter does not fit the UNet: ") and expected in str(e.value)
    assert "more)" in str(e.value)  # only the first names, then how many more
    assert expected in motion_adapter_mismatch(image.unet.config, adapter(**changes).config)  # configs alone


def test_fitting_adapters_pass(image):
    for ad in (tiny_motion_adapter(1), adapter(motion_layers_per_block=(1, 1)), adapter(use_motion_mid_block=True),
               adapter(motion_max_seq_length=8)):
        assert motion_adapter_mismatch(image.unet, ad) == ""
        check_motion_adapter(image.unet, ad)


def test_adapter_that_fits_no_unet_width(image):
    odd = {**image.unet.config, "block_out_channels": (16, 48), "norm_num_groups": 16}
    with pytest.raises(ValueError, match=r"block_out_channels \(32, 64\) vs the UNet's \(16, 48\); no MotionAdapter with "
                                         r"its other settings fits the UNet \("):
        check_motion_adapter(odd, tiny_motion_adapter(1))


def test_motion_unet_takes_no_adapter(folders, video):
    with pytest.raises(ValueError, match="already a motion model"): inflate_unet(video.unet, tiny_motion_adapter(1))
    with pytest.raises(ValueError, match=f"the UNet in {folders / 'video' / 'unet'} is already a motion model"):
        load_components(folders / "video", motion_adapter=folders / "adapter")


def test_load_components_names_both_folders_when_the_adapter_does_not_fit(tmp_path, folders):
    adapter(block_out_channels=(32, 128)).save_pretrained(tmp_path / "wide")
    with pytest.raises(ValueError) as e: load_components(folders / "sd15", motion_adapter=tmp_path / "wide")
    assert str(e.value).startswith(f"motion adapter {tmp_path / 'wide'} does not fit the UNet in {folders / 'sd15' / 'unet'}: "
                                   "block_out_channels (32, 128) vs the UNet's (32, 64)")


def test_adapter_folder_with_missing_keys(tmp_path, folders):
    shutil.copytree(folders / "adapter", tmp_path / "ad")
    weights = tmp_path / "ad" / "diffusion_pytorch_model.safetensors"
    save_file({k: w for k, w in load_file(weights).items() if ".attn1." not in k}, weights)
    with pytest.raises(ValueError) as e: load_components(folders / "sd15", motion_adapter=tmp_path / "ad")
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 'ad'}: the weights do not match config.json: of the 162 tensors the config "
                          "describes, 30 missing (down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.to_k.weight, ")
    assert msg.endswith("attn1.to_out.0.weight, … (+27 more))")


def test_adapter_folder_with_weights_of_another_shape(tmp_path):
    adapter(block_out_channels=(32, 128)).save_pretrained(tmp_path / "ad")
    tiny_motion_adapter(1).save_config(tmp_path / "ad")  # the config of another adapter
    with pytest.raises(ValueError, match=r"of the 162 tensors the config describes, 81 of another shape \(down_blocks\.1\."
                                         r"motion_modules\.0\.norm\.bias: expected \(64,\), found \(128,\)"):
        load_motion_adapter(tmp_path / "ad")


# --- bad adapter folders ---------------------------------------------------------------------------------------

def test_missing_adapter_folder(tmp_path, folders):
    with pytest.raises(FileNotFoundError, match=f"motion adapter folder not found: {tmp_path / 'nowhere'}"):
        load_components(folders / "sd15", motion_adapter=tmp_path / "nowhere")


def test_adapter_folder_without_config(tmp_path, folders):
    shutil.copytree(folders / "adapter", tmp_path / "ad")
    (tmp_path / "ad" / "config.json").unlink()
    with pytest.raises(FileNotFoundError) as e: load_motion_adapter(tmp_path / "ad")
    assert str(e.value) == (f"{tmp_path / 'ad'}: no config.json, expected a diffusers MotionAdapter folder (config.json "
                            "and diffusion_pytorch_model.safetensors); found diffusion_pytorch_model.safetensors")


def test_adapter_folder_without_weights(tmp_path, folders):
    shutil.copytree(folders / "adapter", tmp_path / "ad")
    (tmp_path / "ad" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no weights for component 'motion_adapter' \\(MotionAdapter\\); expected "
                                                "one of diffusion_pytorch_model.safetensors.*; found config.json"):
        load_components(folders / "sd15", motion_adapter=tmp_path / "ad")


def test_adapter_given_as_a_file_or_another_class(tmp_path, folders):
    ckpt = tmp_path / "mm_sd_v15_v2.ckpt"
    ckpt.write_bytes(b"not a folder")
    with pytest.raises(ValueError, match="is a file; a motion adapter is a diffusers MotionAdapter folder .*convert"):
        load_motion_adapter(ckpt)
    with pytest.raises(ValueError, match="_class_name is 'UNet2DConditionModel', expected 'MotionAdapter'"):
        load_motion_adapter(folders / "sd15" / "unet")


# --- training scope --------------------------------------------------------------------------------------------

def is_motion(name): return ".motion_modules." in name


def test_scope_names():
    assert TRAIN_SCOPES == ("full", "motion", "lora") and LORA_SIDES == ("both", "spatial", "motion")
    assert LORA_TARGETS == ("to_q", "to_k", "to_v", "to_out.0")


def test_full_scope_trains_everything(video, image):
    for unet in (video.unet, image.unet):
        u = copy.deepcopy(unet).requires_grad_(False)
        assert set_train_scope(u, "full") is u
        assert len(trainable(u)) == len(list(u.parameters()))


def test_motion_scope_trains_exactly_the_motion_modules(video):
    u = set_train_scope(copy.deepcopy(video.unet), "motion")
    names = set(trainable(u))
    assert names == {n for n, _ in u.named_parameters() if is_motion(n)} and names


@pytest.mark.parametrize("side", LORA_SIDES)
def test_lora_sides_on_a_motion_unet(video, side):
    u = set_train_scope(copy.deepcopy(video.unet), "lora", lora_rank=4, lora_alpha=8, lora_side=side)
    names = trainable(u)
    assert names and all(".lora_A." in n or ".lora_B." in n for n in names)
    assert all(p.dtype == torch.float32 for p in names.values())
    base = {n.split(".lora_")[0] for n in names}  # the adapted modules
    assert all(m.rsplit(".", 1)[-1] in ("to_q", "to_k", "to_v") or m.endswith("to_out.0") for m in base)
    motion = [is_motion(n) for n in names]
    if side == "spatial": assert not any(motion)
    if side == "motion": assert all(motion)
    if side == "both": assert any(motion) and not all(motion)
    every = {n for n, _ in video.unet.named_modules() if n.endswith(("to_q", "to_k", "to_v", "to_out.0"))}
    want = {"both": every, "spatial": {n for n in every if not is_motion(n)}, "motion": {n for n in every if is_motion(n)}}
    assert base == want[side]
    assert u.peft_config["default"].r == 4 and u.peft_config["default"].lora_alpha == 8


def test_lora_keeps_float32_on_a_half_unet_and_starts_at_the_base_model(video, inputs):
    u = set_train_scope(copy.deepcopy(video.unet).to(torch.bfloat16), "lora", lora_rank=2)
    assert {p.dtype for p in trainable(u).values()} == {torch.float32}
    assert {p.dtype for p in u.parameters() if not p.requires_grad} == {torch.bfloat16}
    assert u.peft_config["default"].lora_alpha == 2  # alpha defaults to the rank
    u = set_train_scope(copy.deepcopy(video.unet), "lora", lora_rank=2)
    assert torch.equal(forward(u, inputs), forward(video.unet, inputs))  # B starts at zero


def test_image_unet_sides(image):
    spatial = trainable(set_train_scope(copy.deepcopy(image.unet), "lora", lora_rank=2, lora_side="spatial"))
    both = trainable(set_train_scope(copy.deepcopy(image.unet), "lora", lora_rank=2, lora_side="both"))
    assert set(spatial) == set(both) and spatial
    assert lora_target_modules("spatial", video=False) == lora_target_modules("both", video=False) == list(LORA_TARGETS)
    with pytest.raises(ValueError, match="lora_side 'motion' needs a motion UNet"):
        set_train_scope(copy.deepcopy(image.unet), "lora", lora_rank=2, lora_side="motion")
    with pytest.raises(ValueError, match="train scope 'motion' needs a motion UNet \\(UNetMotionModel\\); UNet2DConditionModel"):
        set_train_scope(copy.deepcopy(image.unet), "motion")


def test_target_regexes_are_full_matches():
    import re
    spatial, motion = lora_target_modules("spatial"), lora_target_modules("motion")
    for name, s, m in [("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", True, False),
                       ("mid_block.attentions.0.transformer_blocks.0.attn2.to_out.0", True, False),
                       ("up_blocks.1.motion_modules.2.transformer_blocks.0.attn1.to_v", False, True),
                       ("mid_block.motion_modules.0.transformer_blocks.0.attn2.to_out.0", False, True),
                       ("down_blocks.0.motion_modules.0.proj_out", False, False),
                       ("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.1", False, False)]:
        assert (bool(re.fullmatch(spatial, name)), bool(re.fullmatch(motion, name))) == (s, m), name


@pytest.mark.parametrize("call,error", [
    (lambda u: set_train_scope(u, "partial"), "train scope must be one of full, motion, lora, found 'partial'"),
    (lambda u: set_train_scope(u, "lora", lora_rank=2, lora_side="temporal"), "lora_side must be one of both, spatial, motion"),
    (lambda u: lora_target_modules("temporal"), "found 'temporal'"),
    (lambda u: set_train_scope(u, "lora"), "train scope 'lora' needs lora_rank >= 1, found 0"),
    (lambda u: set_train_scope(u, "full", lora_rank=4), "lora_rank and lora_side are for train scope 'lora'; scope 'full' got lora_rank=4"),
    (lambda u: set_train_scope(u, "motion", lora_side="spatial"), "scope 'motion' got lora_rank=0, lora_side='spatial'"),
    (lambda u: set_train_scope(set_train_scope(u, "lora", lora_rank=2), "lora", lora_rank=2), "already has LoRA adapters (default)"),
    (lambda u: set_train_scope(set_train_scope(u, "lora", lora_rank=2), "full"), "already has LoRA adapters"),
], ids=["scope", "side", "target-side", "rank", "rank-off-lora", "side-off-lora", "lora-twice", "full-after-lora"])
def test_scope_errors(video, call, error):
    with pytest.raises(ValueError) as e: call(copy.deepcopy(video.unet))
    assert error in str(e.value)


def test_scope_on_a_wrapped_unet(video):
    class Wrapper(torch.nn.Module):  # what DDP looks like: the model under .module
        def __init__(self, m): super().__init__(); self.module = m
    w = Wrapper(copy.deepcopy(video.unet))
    assert set_train_scope(w, "motion") is w
    assert set(trainable(w.module)) == {n for n, _ in w.module.named_parameters() if is_motion(n)}


# --- LoRA weights round-trip through diffusers' pipelines ------------------------------------------------------

def train_a_little(unet):
    with torch.no_grad():
        for p in unet.parameters():
            if p.requires_grad: p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    return unet


@pytest.mark.parametrize("side", ["motion", "spatial"])
def test_lora_round_trip_through_animatediff_pipeline(tmp_path, folders, video, inputs, side):
    trained = train_a_little(set_train_scope(copy.deepcopy(video.unet), "lora", lora_rank=4, lora_alpha=2, lora_side=side))
    out = save_lora(trained, tmp_path / "lora")
    assert out == tmp_path / "lora" and sorted(p.name for p in out.iterdir()) == [LORA_WEIGHTS_FILE]
    keys = load_file(out / LORA_WEIGHTS_FILE).keys()
    assert keys and all(k.startswith("unet.") for k in keys) and all(is_motion(k) == (side == "motion") for k in keys)
    pipe = AnimateDiffPipeline.from_pretrained(folders / "video")  # a fresh pipeline of the base model
    pipe.load_lora_weights(out)
    y = forward(trained, inputs)
    assert (y - forward(video.unet, inputs)).abs().max() > 1e-3  # the LoRA changes the model ...
    assert (forward(pipe.unet, inputs) - y).abs().max() < 1e-5   # ... and comes back exactly, alpha included


def test_lora_round_trip_through_stable_diffusion_pipeline(tmp_path, folders, image, inputs):
    trained = train_a_little(set_train_scope(copy.deepcopy(image.unet), "lora", lora_rank=2, lora_alpha=1))
    pipe = StableDiffusionPipeline.from_pretrained(folders / "sd15", safety_checker=None, requires_safety_checker=False)
    pipe.load_lora_weights(save_lora(trained, tmp_path / "lora"))
    x, t, e = inputs
    with torch.no_grad():
        y, y_loaded, y_base = (u(x[:, :, 0], t, encoder_hidden_states=e).sample for u in (trained, pipe.unet, image.unet))
    assert (y - y_base).abs().max() > 1e-3 and (y_loaded - y).abs().max() < 1e-5


def test_save_lora_needs_one_adapter(tmp_path, image):
    from peft import LoraConfig
    with pytest.raises(ValueError, match=r"exactly one LoRA adapter, UNet2DConditionModel has 0 \(none\)"):
        save_lora(image.unet, tmp_path / "lora")
    u = set_train_scope(copy.deepcopy(image.unet), "lora", lora_rank=2)
    u.add_adapter(LoraConfig(r=2, target_modules=["to_q"]), adapter_name="second")
    with pytest.raises(ValueError, match=r"has 2 \(default, second\)"): save_lora(u, tmp_path / "lora")
    assert not (tmp_path / "lora").exists()


# --- per-frame text embeddings ---------------------------------------------------------------------------------

def test_frame_embeds_follow_each_prompt(video, inputs):
    x, t, e = inputs
    rows = frame_embeds(video.unet, e, F)
    assert rows.shape == (2 * F, 77, 32)
    for i in range(2):
        for r in range(i * F, (i + 1) * F): assert torch.equal(rows[r], e[i]), (i, r)
    both = forward(video.unet, inputs)
    alone = torch.cat([forward(video.unet, (x[i:i + 1], t[:1], e[i:i + 1])) for i in range(2)])
    assert (both - alone).abs().max() < 1e-5
    with torch.no_grad(): wrong = video.unet(x, t, encoder_hidden_states=e.repeat(F, 1, 1)).sample
    assert (wrong - alone).abs().max() > 1e-3  # repeat() conditions sample 0's later frames on prompt 1
    assert frame_embeds(tiny_components(0).unet, e, F) is e  # an image UNet takes one row per sample


def test_too_many_frames_names_f_and_the_limit(video, inputs):
    e = inputs[2]
    assert frame_embeds(video.unet, e, 16).shape[0] == 32  # F = motion_max_seq_length is fine
    with pytest.raises(ValueError, match=r"^17 frames exceed the motion modules' motion_max_seq_length of 16 .*"
                                         r"sample at most 16 frames per clip$"):
        frame_embeds(video.unet, e, 17)
    short = tiny_video_components(0, max_frames=4).unet
    with pytest.raises(ValueError, match="5 frames exceed the motion modules' motion_max_seq_length of 4"):
        frame_embeds(short, e, 5)
