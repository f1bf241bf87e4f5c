"""The text-to-video evaluation (seppo.eval.evaluate_video): per-clip seeding and parity with AnimateDiffPipeline, the
decode layout, resumption after interruptions, refusing another evaluation's folder, and the errors of bad metrics
and bad benchmark folders."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from seppo.eval import evaluate_video as ev
from seppo.eval.evaluate import MANIFEST_FILE, METRICS_FILE, RUN_FILE, Manifest
from seppo.utils import mean_ci
from seppo.core.models import save_components, tiny_video_components
from seppo.core.video_data import read_video, write_video
from seppo.eval.video_metrics import evaluate_clips, save_tiny_feature_net

torch.set_num_threads(1)

RUN = dict(num_frames=4, resolution=16, num_steps=2, batch_size=2, device="cpu")
METRICS = {"psnr": None, "ssim": None}


def moving_clip(i, frames=6, side=16):
    """A clip of a square moving right over a gradient that brightens with time; `i` moves and tints it."""
    c = np.zeros((frames, side, side, 3), np.uint8)
    for f in range(frames):
        c[f] = np.linspace(20, 120, side, dtype=np.uint8)[:, None, None] + 8 * f
        c[f, ..., i % 3] += 60
        c[f, 2 + i % 5:7 + i % 5, 1 + f:6 + f] = (230, 200, 60)
    return c


def write_bench(root, n=6, frames=8):
    """n frame-folder clips and a captions.jsonl naming them."""
    for i in range(n): write_video(root / f"clip{i}", moving_clip(i, frames))
    (root / "captions.jsonl").write_text("".join(json.dumps({"file_name": f"clip{i}", "caption": f"sunrise {i}"}) + "\n"
                                                 for i in range(n)))
    return root


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("ev")
    save_components(tiny_video_components(seed=0), d / "model")
    write_bench(d / "bench")
    return d


@pytest.fixture(scope="module")
def comps():
    return tiny_video_components(seed=0)


def clips_of(out, n=6, seed=0):
    return np.stack([read_video(out / ev.clip_relpath(i, ev.clip_seed(seed, i))) for i in range(n)])


def mtimes(out):
    return {p: p.stat().st_mtime_ns for p in (out / ev.CLIPS_DIR).rglob("*.png")}


class Counter:
    """Wraps a function of seppo.eval.evaluate_video and counts its calls (and the prompts it generated)."""
    def __init__(self, monkeypatch, name, fail_at=None):
        self.fn, self.name, self.calls, self.prompts, self.fail_at = getattr(ev, name), name, 0, [], fail_at
        monkeypatch.setattr(ev, name, self)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.fail_at: raise KeyboardInterrupt("killed")
        if self.name == "generate_clips": self.prompts += list(args[1])
        return self.fn(*args, **kwargs)


# ---------------------------------------------------------------- generation

def test_generate_clips_is_animatediff_pipeline_bit_for_bit(comps):
    from diffusers import AnimateDiffPipeline
    pipe = AnimateDiffPipeline(vae=comps.vae, text_encoder=comps.text_encoder, tokenizer=comps.tokenizer,
                               unet=comps.unet, motion_adapter=None, scheduler=comps.scheduler)
    pipe.set_progress_bar_config(disable=True)
    prompts = ["a sunrise", "clouds over a hill"]
    frames = pipe(prompt=prompts, num_frames=4, num_inference_steps=2, guidance_scale=7.5, height=16, width=16,
                  generator=[torch.Generator().manual_seed(s) for s in (5, 6)], output_type="np").frames
    ours = ev.generate_clips(comps, prompts, [5, 6], num_frames=4, num_steps=2, guidance_scale=7.5)
    np.testing.assert_array_equal(ours, (np.asarray(frames) * 255).round().astype(np.uint8))


def test_a_clip_is_independent_of_its_batch(comps):
    prompts, seeds = [f"sunrise {i}" for i in range(4)], [3, 1, 4, 1_000_002]
    run = dict(num_frames=4, num_steps=2, guidance_scale=7.5)
    together = ev.generate_clips(comps, prompts, seeds, batch_size=4, **run)
    assert together.shape == (4, 4, 16, 16, 3) and together.dtype == np.uint8
    np.testing.assert_array_equal(ev.generate_clips(comps, prompts, seeds, batch_size=4, **run), together)
    for bs in (1, 3):   # other batches: the same clips up to one grey level of float rounding
        other = ev.generate_clips(comps, prompts, seeds, batch_size=bs, **run)
        assert np.abs(other.astype(int) - together).max() <= 1
    # clip 2 moved to the front of another batch, beside another caption, is still clip 2
    moved = ev.generate_clips(comps, [prompts[2], "a night sky"], [seeds[2], 77], batch_size=2, **run)
    assert np.abs(moved[0].astype(int) - together[2]).max() <= 1
    # the seed (not the position) makes the clip: seed 1 twice with one caption gives one clip twice
    twice = ev.generate_clips(comps, [prompts[1]] * 2, [1, 1], batch_size=2, **run)
    assert np.abs(twice[0].astype(int) - twice[1]).max() <= 1
    assert np.abs(together[0].astype(int) - together[1]).mean() > 5      # other seeds, other clips


# ---------------------------------------------------------------- decoding

class FrameIdVAE(torch.nn.Module):
    """A VAE stand-in: decodes a latent frame (c, h, w) to a (3, 2h, 2w) frame holding channel 0's mean."""
    class config:
        scaling_factor = 0.25
        block_out_channels = (8, 8)
    device, dtype = torch.device("cpu"), torch.float32

    def __init__(self): super().__init__(); self.calls = []

    def decode(self, z):
        self.calls.append(len(z))
        x = z[:, :1].mean((2, 3), keepdim=True).expand(-1, 3, 2 * z.shape[2], 2 * z.shape[3])
        return type("Decoded", (), {"sample": x})


def test_decode_maps_each_latent_frame_to_its_output_frame():
    B, C, nf = 3, 4, 5
    ids = torch.arange(B * nf, dtype=torch.float32).reshape(B, nf) / (B * nf) - 0.5   # a value per (clip, frame)
    lat = torch.zeros(B, C, nf, 2, 3)
    lat[:, 0] = (ids * 0.25)[..., None, None]                      # scaled latents: / scaling_factor gives ids
    lat[:, 1:] = 9.0                                               # other channels are not channel 0
    for chunk in (1, 4, 16):
        vae = FrameIdVAE()
        out = ev.decode_clips(vae, lat, chunk)
        assert out.shape == (B, nf, 4, 6, 3) and out.dtype == np.uint8
        np.testing.assert_array_equal(out[..., 0, 0, 0], ev.to_uint8(ids))
        assert (out == out[:, :, :1, :1]).all()                    # every pixel of a frame alike
        assert vae.calls == [min(chunk, B * nf - k) for k in range(0, B * nf, chunk)]
    # no VAE: the latents are the pixels, (B, 3, F, H, W) -> (B, F, H, W, 3)
    x = torch.rand(2, 3, 4, 5, 6, generator=torch.Generator().manual_seed(0)) * 2 - 1
    np.testing.assert_array_equal(ev.decode_clips(None, x), ev.to_uint8(x.permute(0, 2, 3, 4, 1)))


def test_decode_with_the_tiny_vae_is_per_frame(comps):
    z = torch.randn(2, 4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    out = ev.decode_clips(comps.vae, z, chunk_size=4)
    with torch.no_grad():
        for b, f in ((0, 0), (1, 2), (0, 2)):
            one = comps.vae.decode(z[b:b + 1, :, f] / comps.vae.config.scaling_factor).sample[0]
            np.testing.assert_array_equal(out[b, f], ev.to_uint8(one.permute(1, 2, 0)))


# ---------------------------------------------------------------- evaluate_video

def test_metrics_are_the_saved_clips_scores(setup):
    d = setup
    save_tiny_feature_net(d / "w" / "i3d_torchscript.pt", "i3d")
    metrics = {"psnr": None, "ssim": None, "fvd": (str(d / "w"), {"device": "cpu"})}
    result = ev.evaluate_video(d / "model", d / "bench", d / "full", metrics, **RUN)
    gen, truth = clips_of(d / "full"), ev.ground_truth_clips(ev.video_folder_items(d / "bench"), 4, 16)
    np.testing.assert_array_equal(truth, np.stack([moving_clip(i)[:4] for i in range(6)]))
    direct = evaluate_clips(gen, truth, ev.build_video_metrics(metrics))
    for k, v in direct.items(): assert result["metrics"][f"{k}/mean"] == pytest.approx(v, rel=1e-12)
    records = Manifest(d / "full" / MANIFEST_FILE).records
    psnr = [records[("video", i, i)]["scores"]["psnr"] for i in range(6)]
    m, lo, hi = mean_ci(psnr)
    assert result["metrics"]["psnr/ci95"] == pytest.approx([lo, hi]) and result["metrics"]["psnr/n"] == 6
    assert result["metrics"]["fvd/ci95"] is None and "fvd" not in records[("video", 0, 0)]["scores"]
    assert json.loads((d / "full" / METRICS_FILE).read_text()) == json.loads(json.dumps(result))
    assert result["settings"]["scheduler"] == "ddim" and result["data"]["n"] == 6


def test_resume_after_the_scorer_fails_and_after_damage(setup, monkeypatch):
    d = setup
    out = d / "resume"
    def broken(pred, target): raise RuntimeError("scorer died")
    with pytest.raises(RuntimeError, match="scorer died"):
        ev.evaluate_video(d / "model", d / "bench", out, {"psnr": None, "boom": broken}, **RUN)
    assert not (out / METRICS_FILE).exists() and len(list((out / ev.CLIPS_DIR).iterdir())) == 6
    first, times = clips_of(out), mtimes(out)

    gen = Counter(monkeypatch, "generate_clips")
    result = ev.evaluate_video(d / "model", d / "bench", out, METRICS, **RUN)
    assert gen.calls == 0 and mtimes(out) == times                # nothing generated again
    assert (out / METRICS_FILE).exists()

    # one clip deleted, one frame cut short, a half-written clip left behind, metrics.json gone
    shutil.rmtree(out / ev.clip_relpath(1, 1))
    cut = out / ev.clip_relpath(4, 4) / "002.png"
    cut.write_bytes(cut.read_bytes()[:25])
    half = out / ev.CLIPS_DIR / ".00003-3.k2x8wq.tmp"                 # as replace_folder names its folder
    half.mkdir()
    write_video(half, first[3][:2])
    (out / METRICS_FILE).unlink()
    kept = {p: t for p, t in times.items() if p.parent.name not in ("00001-1", "00004-4")}
    written = Counter(monkeypatch, "_write_clip")
    again = ev.evaluate_video(d / "model", d / "bench", out, METRICS, **RUN)
    assert written.calls == 2 and gen.calls == 2                  # batches (0, 1) and (4, 5), as the first run made them
    assert gen.prompts == ["sunrise 0", "sunrise 1", "sunrise 4", "sunrise 5"]
    assert {p: p.stat().st_mtime_ns for p in kept} == kept        # the other clips untouched
    np.testing.assert_array_equal(clips_of(out), first)           # bit for bit the first run's clips
    assert again == result and not list((out / ev.CLIPS_DIR).glob(".*"))

    # clips written but never listed (the manifest lost): listed again, nothing generated
    (out / MANIFEST_FILE).unlink()
    assert ev.evaluate_video(d / "model", d / "bench", out, METRICS, **RUN) == result
    assert gen.calls == 2 and len(Manifest(out / MANIFEST_FILE).records) == 6


def test_resume_after_an_interrupted_generation(setup, monkeypatch):
    d = setup
    whole = ev.evaluate_video(d / "model", d / "bench", d / "whole", METRICS, **RUN)
    gen = Counter(monkeypatch, "generate_clips", fail_at=2)
    with pytest.raises(KeyboardInterrupt):
        ev.evaluate_video(d / "model", d / "bench", d / "cut", METRICS, **RUN)
    assert sorted(p.name for p in (d / "cut" / ev.CLIPS_DIR).iterdir()) == ["00000-0", "00001-1"]
    assert len(Manifest(d / "cut" / MANIFEST_FILE).records) == 2
    gen = Counter(monkeypatch, "generate_clips")
    assert ev.evaluate_video(d / "model", d / "bench", d / "cut", METRICS, **RUN)["metrics"] == whole["metrics"]
    assert gen.prompts == [f"sunrise {i}" for i in range(2, 6)]
    np.testing.assert_array_equal(clips_of(d / "cut"), clips_of(d / "whole"))


def test_more_clips_later_and_a_components_model(setup, comps, monkeypatch):
    d = setup
    ev.evaluate_video(comps, d / "bench", d / "grow", METRICS, max_clips=3, **RUN)
    gen = Counter(monkeypatch, "generate_clips")
    result = ev.evaluate_video(comps, d / "bench", d / "grow", METRICS, **RUN)
    assert gen.prompts == ["sunrise 2", "sunrise 3", "sunrise 4", "sunrise 5"]   # batch (2, 3): clip 3 is new
    assert result["n_clips"] == 6 and result["model"] == "<Components>" and result["settings"]["dtype"] == "float32"


def test_a_changed_setting_in_the_same_folder_is_refused(setup):
    d = setup
    ev.evaluate_video(d / "model", d / "bench", d / "fixed", METRICS, max_clips=2, **RUN)
    for change, message in [(dict(num_frames=3), "num_frames=4, this one has num_frames=3"),
                            (dict(resolution=8), "resolution=16, this one has resolution=8"),
                            (dict(seed=1), "seed=0, this one has seed=1"),
                            (dict(guidance_scale=3.0), "guidance_scale=7.5, this one has guidance_scale=3.0"),
                            (dict(scheduler="euler"), "scheduler='ddim', this one has scheduler='euler'"),
                            (dict(frame_stride=2), "frame_stride=1, this one has frame_stride=2")]:
        with pytest.raises(ValueError, match="use another"):
            try: ev.evaluate_video(d / "model", d / "bench", d / "fixed", METRICS, max_clips=2, **RUN | change)
            except ValueError as e: assert message in str(e) and str(d / "fixed") in str(e); raise
    # an image evaluation's folder
    (d / "image_eval").mkdir()
    (d / "image_eval" / RUN_FILE).write_text(json.dumps({"model": "x", "protocol": "official"}))
    with pytest.raises(ValueError, match="kind=None, this one has kind='video'"):
        ev.evaluate_video(d / "model", d / "bench", d / "image_eval", METRICS, max_clips=2, **RUN)
    # the same folder of clips with edited captions
    bench2 = write_bench(d / "bench2", n=2)
    ev.evaluate_video(d / "model", bench2, d / "captions", METRICS, **RUN)
    (bench2 / "captions.jsonl").write_text((bench2 / "captions.jsonl").read_text().replace("sunrise 1", "sunset"))
    with pytest.raises(ValueError, match="was generated for 'sunrise 1', but caption 1 .* is 'sunset'"):
        ev.evaluate_video(d / "model", bench2, d / "captions", METRICS, **RUN)


def test_bad_metrics_fail_before_any_work(setup, tmp_path):
    d = setup
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match=r"video metric 'fvd': .*gone\.pt not found"):
        ev.evaluate_video(d / "model", d / "bench", out, {"psnr": None, "fvd": tmp_path / "gone.pt"}, **RUN)
    with pytest.raises(ValueError, match="video metric 'lpips' needs"):
        ev.evaluate_video(d / "model", d / "bench", out, {"lpips": None}, **RUN)
    with pytest.raises(ValueError, match="unknown video metric 'vmaf'"):
        ev.evaluate_video(d / "model", d / "bench", out, {"vmaf": None}, **RUN)
    with pytest.raises(ValueError, match="no video metrics"):
        ev.evaluate_video(d / "model", d / "bench", out, {}, **RUN)
    with pytest.raises(ValueError, match="unknown scheduler 'heun'"):
        ev.evaluate_video(d / "model", d / "bench", out, METRICS, **RUN | dict(scheduler="heun"))
    assert not out.exists()


def test_benchmark_folder_errors_propagate(tmp_path):
    bench = write_bench(tmp_path / "bench", n=3)
    shutil.rmtree(bench / "clip1")
    with pytest.raises(FileNotFoundError, match=r"captions\.jsonl names 1 clip\(s\) not found under .*\['clip1'\]"):
        ev.evaluate_video(tmp_path / "model", bench, tmp_path / "out", METRICS, **RUN)
    with pytest.raises(ValueError, match=r"item 0: clip .*b2/clip0 has 8 frames, needs 9 \(num_frames=9"):
        ev.evaluate_video(tmp_path / "model", write_bench(tmp_path / "b2", n=2), tmp_path / "out", METRICS,
                          **RUN | dict(num_frames=9))
    assert not (tmp_path / "out").exists()


def test_chronomagic_layout_and_uncaptioned_clips(setup, tmp_path):
    """ChronoMagic-Bench-150: Captions/ChronoMagic-Bench-150.csv (videoid, name, ...) and <videoid>.mp4 videos."""
    bench = tmp_path / "ChronoMagic-Bench"
    rows = [("3d_printing_08", "Time-lapse of a 3D printing process", "3d_printing", "human_creation"),
            ("day2night_13.0", "Time-lapse of the sky turning from day to night", "day2night", "meteorological")]
    for k, (videoid, *_) in enumerate(rows): write_video(bench / "videos" / f"{videoid}.mp4", moving_clip(k, 8, 20))
    write_video(bench / "videos" / "not_in_150.mp4", moving_clip(5, 8, 20))
    (bench / "Captions").mkdir()
    pd.DataFrame(rows, columns=["videoid", "name", "sub_category", "main_category"]).to_csv(
        bench / "Captions" / "ChronoMagic-Bench-150.csv", index=False)
    with pytest.raises(ValueError, match=r"1 clip\(s\) under .* have no caption .*not_in_150\.mp4"):
        ev.evaluate_video(setup / "model", bench, tmp_path / "out", METRICS, **RUN)
    result = ev.evaluate_video(setup / "model", bench, tmp_path / "out", METRICS, uncaptioned="ignore", **RUN)
    records = Manifest(tmp_path / "out" / MANIFEST_FILE).records
    assert [records[("video", i, i)]["prompt"] for i in range(2)] == [r[1] for r in rows]
    assert records[("video", 1, 1)]["truth"] == "videos/day2night_13.0.mp4" and result["n_clips"] == 2


# ---------------------------------------------------------------- the config value

def test_parse_video_metrics():
    assert ev.parse_video_metrics("psnr;ssim;fvd=/p/i3d.pt;lpips=/p/alex.pth,lin=/p/lin.pth") == {
        "psnr": (None, {}), "ssim": (None, {}), "fvd": ("/p/i3d.pt", {}), "lpips": ("/p/alex.pth", {"lin": "/p/lin.pth"})}
    assert ev.parse_video_metrics(" psnr,max_db=100 ; fid=/w ;") == {"psnr": (None, {"max_db": "100"}), "fid": ("/w", {})}
    for bad, message in [("", "eval_video_metrics is empty"), (";;", "eval_video_metrics is empty"),
                         (None, "eval_video_metrics is empty"), ("psnr;clip", "eval_video_metrics: unknown video metric 'clip'"),
                         ("ssim;ssim", "'ssim' is given twice"), ("fvd=/p,oops", "option 'oops' is not key=value"),
                         ("=/p", "expected NAME")]:
        with pytest.raises(ValueError, match=message): ev.parse_video_metrics(bad)
    # what it parses, evaluate_video takes: the weights are checked when the metrics are built
    with pytest.raises(FileNotFoundError, match="video metric 'fvd'"):
        ev.build_video_metrics(ev.parse_video_metrics("psnr;fvd=/nonexistent/i3d.pt"))
