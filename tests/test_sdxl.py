"""SDXL training on tiny SDXL components saved to disk: full and LoRA, exact resume, results that load into
StableDiffusionXLPipeline and change its output, and the size conditioning reaching the UNet."""
import pytest
import torch
from diffusers import StableDiffusionXLPipeline
from safetensors.torch import load_file

from seppo.core import trainer as tr
from seppo.core.config import load_config
from seppo.core.hooks import add_hook
from seppo.core.models import save_components, tiny_xl_components

from trainrun import assert_bitwise_equal


@pytest.fixture(scope="module")
def xl_path(tmp_path_factory):
    return save_components(tiny_xl_components(0), tmp_path_factory.mktemp("xl") / "tiny-sdxl")


def cfg(xl_path, out, **over):
    return load_config(**{"model_path": str(xl_path), "train_max_updates": 4, "train_batch_size": 2,
                          "data_toy_size": 8, "sample_num_steps": 2, "ref_snapshot_every": 2,
                          "train_checkpoint_every": 2, "train_checkpoints_keep": 0, "output_dir": str(out),
                          "train_cpu": True} | over)


def xl_latents(pipe_path, lora=None):
    pipe = StableDiffusionXLPipeline.from_pretrained(pipe_path, local_files_only=True)
    if lora is not None: pipe.load_lora_weights(lora)
    pipe.set_progress_bar_config(disable=True)
    return pipe("a red circle", num_inference_steps=2, guidance_scale=1.0, height=16, width=16, output_type="latent",
                generator=torch.Generator().manual_seed(0)).images


def unet_weights(out):
    return load_file(out / "final" / "unet" / "diffusion_pytorch_model.safetensors")


class Stop(Exception): pass


@pytest.mark.parametrize("method", ["seppo", "dpo", "sft"])
def test_sdxl_full_trains_resumes_exactly_and_loads(tmp_path, xl_path, method):
    whole = tr.train(cfg(xl_path, tmp_path / "whole", train_method=method), progress=False)
    assert whole["updates"] == 4
    def stop(update):
        if update == 3: raise Stop
    remove = add_hook("after_step", stop)
    try:
        with pytest.raises(Stop): tr.train(cfg(xl_path, tmp_path / "cut", train_method=method), progress=False)
    finally: remove()
    tr.train(cfg(xl_path, tmp_path / "cut", train_method=method), resume=True, progress=False)
    assert_bitwise_equal(unet_weights(tmp_path / "whole"), unet_weights(tmp_path / "cut"))
    base, trained = xl_latents(xl_path), xl_latents(tmp_path / "whole" / "final")
    assert base.shape == trained.shape == (1, 4, 8, 8) and not torch.equal(base, trained)


def test_sdxl_lora_trains_resumes_and_loads_into_the_pipeline(tmp_path, xl_path):
    over = {"train_lora_rank": 4, "train_lr": 1e-2}
    tr.train(cfg(xl_path, tmp_path / "whole", **over), progress=False)
    remove = add_hook("after_step", lambda update: (_ for _ in ()).throw(Stop()) if update == 3 else None)
    try:
        with pytest.raises(Stop): tr.train(cfg(xl_path, tmp_path / "cut", **over), progress=False)
    finally: remove()
    tr.train(cfg(xl_path, tmp_path / "cut", **over), resume=True, progress=False)
    lora = "final/pytorch_lora_weights.safetensors"
    assert_bitwise_equal(load_file(tmp_path / "whole" / lora), load_file(tmp_path / "cut" / lora))
    base, adapted = xl_latents(xl_path), xl_latents(xl_path, lora=tmp_path / "whole" / "final")
    assert not torch.equal(base, adapted)


def test_size_conditioning_reaches_the_unet_on_both_sides(xl_path):
    comps = tr.load_components(xl_path)
    unet = comps.unet.eval()
    step = tr.Step(load_config(train_method="dpo"), tr.DDPMScheduler.from_config(comps.scheduler.config), ref_unet=unet,
                   positions=(0, 1))
    embeds, pooled = tr.text_conditioning(comps, ["a", "b"], "cpu")
    lat = (torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8))
    tid = torch.tensor([[16.0, 16, 0, 0, 16, 16]] * 2)
    added = {"text_embeds": pooled, "time_ids": tid, "time_ids_l": tid}
    with torch.no_grad():
        base = tr.micro_batch_loss(unet, lat, embeds, step, added=added)[1]
        for key in ("time_ids", "time_ids_l"):   # another crop corner for the winners, then for the losers
            moved = tr.micro_batch_loss(unet, lat, embeds, step, added=added | {key: tid + torch.tensor([0, 0, 3, 5, 0, 0])})[1]
            side = "model_loss_w" if key == "time_ids" else "model_loss_l"
            other = "model_loss_l" if key == "time_ids" else "model_loss_w"
            assert not torch.equal(moved[side], base[side]) and torch.equal(moved[other], base[other]), key


def test_sdxl_empty_prompt_is_empty_for_both_encoders(xl_path, tmp_path):
    comps = tr.load_components(xl_path)
    c = cfg(xl_path, tmp_path, data_empty_prompt_prob=1.0)
    ds = tr.build_dataset(c, tmp_path, size_conditioning=True)
    batch = tr.collate([ds[0], ds[1]])
    assert batch["caption"] == ["", ""] and batch["time_ids"].shape == (2, 6)
    embeds, pooled = tr.text_conditioning(comps, batch["caption"], "cpu")
    empty = tr.encode_prompt_xl(comps, ["", ""])
    torch.testing.assert_close((embeds, pooled), empty, rtol=0, atol=0)
    with pytest.raises(KeyError, match="no 'time_ids'"):
        tr.added_conditioning({"caption": ["x"], "pixel_values": None}, pooled[:1])
