"""The trainer on clips, in real processes: AnimateDiff-style motion UNets, a video folder, every training scope,
exact resume, two processes = one, and the data loader's faults."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from trainrun import EXAMPLES, FAST, SEPPO, assert_bitwise_equal, env, final_weights, seppo_train

VIDEO = ["model_motion_adapter=tiny", "data_source=videofolder", "data_num_frames=3", "data_frame_stride=1",
         "data_resolution=16", "train_scope=motion"]


@pytest.fixture(scope="session")
def clips(tmp_path_factory):
    "A folder of 12 clip pairs (6 frames of 16×16 each, PNG frame folders) with a captions.jsonl."
    from seppo.core.video_data import write_video
    root = tmp_path_factory.mktemp("clips")
    rng, rows = np.random.default_rng(0), []
    for i in range(12):
        for side in ("w", "l"):
            x = np.linspace(0, 10, 6)[:, None, None] + (3 if side == "w" else -3) * np.arange(16)[None, None, :]
            frames = np.clip(np.repeat((x + rng.normal(0, 20, (6, 16, 16)))[..., None], 3, -1) + 120, 0, 255)
            write_video(root / side / f"{i:02d}", frames.astype(np.uint8))
        rows.append({"file_name_w": f"w/{i:02d}", "file_name_l": f"l/{i:02d}", "caption": f"a clip number {i} moving right"})
    (root / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def video_train(method, out, *sets, clips, **kw):
    return seppo_train(method, out, *VIDEO, f"data_path={clips}", *sets, **kw)


@pytest.fixture(scope="session")
def video_runs(tmp_path_factory, clips):
    "Uninterrupted runs of each method, the references of the resume tests."
    root = tmp_path_factory.mktemp("video_runs")
    for m in ("sft", "dpo", "seppo"): video_train(m, root / m, clips=clips)
    return {m: root / m for m in ("sft", "dpo", "seppo")}


@pytest.mark.parametrize("method,fault", [("sft", "after_step@3"), ("dpo", "mid_checkpoint@4"),
                                          ("seppo", "after_snapshot@6")])  # winners; pairs; pool + sampling
def test_video_resume_is_bitwise_exact(tmp_path, video_runs, clips, method, fault):
    r = video_train(method, tmp_path, clips=clips, fault=fault, check=False)
    assert r.returncode == 17, r.stderr[-3000:]
    video_train(method, tmp_path, clips=clips, resume=True)
    assert_bitwise_equal(final_weights(tmp_path), final_weights(video_runs[method]))
    logs = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["update"] for r in logs] == list(range(1, 9))


def test_video_final_model_is_an_animatediff_pipeline(video_runs):
    from diffusers import AnimateDiffPipeline, UNetMotionModel
    pipe = AnimateDiffPipeline.from_pretrained(video_runs["seppo"] / "final")
    assert isinstance(pipe.unet, UNetMotionModel)
    logs = [json.loads(line) for line in (video_runs["seppo"] / "log.jsonl").read_text().splitlines()]
    assert [r["pool_size"] for r in logs] == [1, 1, 2, 2, 2, 3, 3, 3] and all(np.isfinite(r["loss"]) for r in logs)


def _changed(out, init):
    w = final_weights(out)
    return {k for k in w if not torch.equal(w[k], init[k])}


@pytest.mark.parametrize("scope", ["motion", "spatial", "unet"])
def test_each_training_scope_trains_its_side_only(tmp_path, clips, scope):
    from seppo.core.models import tiny_video_components
    init = tiny_video_components(0).unet.state_dict()
    video_train("sft", tmp_path, f"train_scope={scope}", "train_max_updates=2", "train_checkpoint_every=0", clips=clips)
    changed = _changed(tmp_path, init)
    motion = {k for k in changed if "motion_modules" in k}
    if scope == "motion": assert motion and motion == changed
    if scope == "spatial": assert changed and not motion
    if scope == "unet": assert motion and changed - motion


@pytest.mark.parametrize("side", ["motion", "spatial"])
def test_lora_on_one_side_saves_an_animatediff_lora(tmp_path, clips, side):
    video_train("seppo", tmp_path, f"train_scope={side}", "train_lora_rank=2", "train_max_updates=2",
                "train_checkpoint_every=0", clips=clips)
    lora = load_file(tmp_path / "final" / "pytorch_lora_weights.safetensors")
    motion = [k for k in lora if "motion_modules" in k]
    assert lora and (len(motion) == len(lora) if side == "motion" else not motion)
    assert Path(json.loads((tmp_path / "final" / "seppo_base.json").read_text())["base_model"]).is_dir()


def test_a_motion_scope_on_an_image_unet_is_a_clear_error(tmp_path, clips):
    r = seppo_train("sft", tmp_path, "data_source=videofolder", f"data_path={clips}", "data_num_frames=3",
                    "train_scope=motion", "train_max_updates=1", check=False)
    assert r.returncode != 0 and "needs a motion UNet" in r.stderr, r.stderr[-2000:]


def test_too_many_frames_for_the_motion_modules_is_a_clear_error(tmp_path, clips):
    from seppo.core.models import tiny_video_components
    limit = tiny_video_components(0).unet.config.motion_max_seq_length
    many = tmp_path / "long"
    from seppo.core.video_data import write_video
    for i in range(2):
        write_video(many / f"{i}", np.zeros((limit + 2, 16, 16, 3), np.uint8))
    (many / "captions.jsonl").write_text("".join(json.dumps({"file_name": f"{i}", "caption": "x"}) + "\n" for i in range(2)))
    r = seppo_train("sft", tmp_path / "run", *VIDEO, f"data_path={many}", f"data_num_frames={limit + 1}",
                    "train_batch_size=2", "train_max_updates=1", check=False)
    assert r.returncode != 0 and f"{limit + 1} frames exceed" in r.stderr and str(limit) in r.stderr, r.stderr[-2000:]


def test_short_and_unreadable_clips_are_skipped_and_counted_or_named(tmp_path, clips):
    import shutil
    bad = tmp_path / "clips"
    shutil.copytree(clips, bad)
    for f in sorted((bad / "w" / "03").iterdir())[2:]: f.unlink()     # 2 frames left: shorter than 3
    (bad / "w" / "05" / "001.png").write_bytes(b"not a png")
    seppo_train("sft", tmp_path / "skip", *VIDEO, f"data_path={bad}", "train_max_updates=3", "train_checkpoint_every=0")
    logs = [json.loads(line) for line in (tmp_path / "skip" / "log.jsonl").read_text().splitlines()]
    assert logs[-1]["data/skipped"] >= 1
    r = seppo_train("sft", tmp_path / "raise", *VIDEO, f"data_path={bad}", "data_on_error=raise", "train_max_updates=3",
                    check=False)
    assert r.returncode != 0 and ("w/03" in r.stderr or "w/05" in r.stderr), r.stderr[-2000:]


def test_a_caption_file_missing_a_clip_is_named(tmp_path, clips):
    import shutil
    bad = tmp_path / "clips"
    shutil.copytree(clips, bad)
    rows = (bad / "captions.jsonl").read_text().splitlines()
    (bad / "captions.jsonl").write_text("\n".join(rows[:-1]) + "\n")       # clip pair 11 has no caption any more
    r = seppo_train("sft", tmp_path / "run", *VIDEO, f"data_path={bad}", "train_max_updates=1", check=False)
    assert r.returncode != 0 and "no caption" in r.stderr and "11" in r.stderr, r.stderr[-2000:]


def torchrun(method, out, nproc, batch, clips):
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--standalone",
           "--no-python", SEPPO, "train", "--config", str(EXAMPLES / f"tiny-{method}.yaml"), "--output-dir", str(out),
           "--no-progress",
           *[a for s in FAST + VIDEO + [f"data_path={clips}", "train_max_updates=3", f"train_batch_size={batch}",
                                        "train_checkpoint_every=0", "ref_snapshot_every=1", "train_lr=0.1",
                                        "train_adam_eps=1.0"] for a in ("--set", s)]]
    r = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{r.stdout[-2000:]}\n{r.stderr[-5000:]}"


@pytest.mark.parametrize("method", ["seppo"])
def test_two_processes_match_one_on_clips(tmp_path, clips, method):
    torchrun(method, tmp_path / "two", nproc=2, batch=2, clips=clips)
    torchrun(method, tmp_path / "one", nproc=1, batch=4, clips=clips)
    a, b = final_weights(tmp_path / "two"), final_weights(tmp_path / "one")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    from seppo.core.models import tiny_video_components
    init = tiny_video_components(0).unet.state_dict()
    assert max((a[k] - init[k]).abs().max().item() for k in a if "motion_modules" in k) > 1e-4
