"""The trainer end to end, in real processes: exact resume after a crash, two processes, final model, errors."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from trainrun import EXAMPLES, FAST, SEPPO, assert_bitwise_equal, env, final_weights, seppo_train


@pytest.mark.parametrize("method,fault", [
    ("sft", "mid_checkpoint@4"),
    ("dpo", "after_step@5"),
    ("seppo", "after_snapshot@6"),   # killed after a pool snapshot, before the checkpoint of update 6
    ("seppo", "mid_checkpoint@6"),   # killed while writing the checkpoint right after the snapshot
])
def test_resume_is_bitwise_exact(tmp_path, reference_runs, data, method, fault):
    r = seppo_train(method, tmp_path, fault=fault, check=False, data=data)
    assert r.returncode == 17, r.stderr[-3000:]
    assert not (tmp_path / "final").exists()
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    if fault.startswith("mid_checkpoint"):
        assert any(n.startswith(".tmp-") for n in ckpts), ckpts   # the half-written checkpoint is there...
    seppo_train(method, tmp_path, resume=True, data=data)             # ...and ignored on resume
    assert_bitwise_equal(final_weights(tmp_path), final_weights(reference_runs[method]))
    logs = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["update"] for r in logs] == list(range(1, 9))
    ref_logs = [json.loads(line) for line in (reference_runs[method] / "log.jsonl").read_text().splitlines()]
    assert [r.get("ref_id") for r in logs] == [r.get("ref_id") for r in ref_logs]


def test_resume_after_sigkill(tmp_path, reference_runs, data):
    """A real SIGKILL at an arbitrary moment (here: as soon as the first checkpoint exists)."""
    import time
    cmd_out = tmp_path
    proc = subprocess.Popen([SEPPO, "train", "--config", str(EXAMPLES / "tiny-seppo.yaml"),
                             "--output-dir", str(cmd_out), "--no-progress", "--set", f"data_path={data}",
                             *[a for s in FAST for a in ("--set", s)]],
                            env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not (cmd_out / "checkpoints" / "step-2").exists() and proc.poll() is None:
        time.sleep(0.05)
    proc.kill(); proc.wait()
    seppo_train("seppo", cmd_out, resume=True, data=data)
    assert_bitwise_equal(final_weights(cmd_out), final_weights(reference_runs["seppo"]))


def test_seppo_log_and_pool(reference_runs):
    logs = [json.loads(line) for line in (reference_runs["seppo"] / "log.jsonl").read_text().splitlines()]
    for key in ("loss", "implicit_acc", "aaf_rate", "ref_id", "lr", "samples_per_s", "time/sampling",
                "time/forward_backward", "time/ref_forward"):
        assert key in logs[0], key
    # the pool grows by one snapshot every 3 updates, and the first update's reference is θ0 (a tie: loss log 2)
    assert [r["pool_size"] for r in logs] == [1, 1, 2, 2, 2, 3, 3, 3]
    assert logs[0]["ref_id"] == 0 and abs(logs[0]["loss"] - 0.6931) < 1e-3
    assert all(0 <= r["ref_id"] < r["pool_size"] for r in logs)


def test_final_model_loads_into_pipeline(reference_runs):
    from diffusers import StableDiffusionPipeline
    out = reference_runs["sft"] / "final"
    pipe = StableDiffusionPipeline.from_pretrained(out, safety_checker=None, requires_safety_checker=False)
    assert_bitwise_equal({k: v for k, v in pipe.unet.state_dict().items()}, final_weights(reference_runs["sft"]))
    img = pipe("a red square", num_inference_steps=2, height=16, width=16, output_type="np",
               generator=torch.Generator().manual_seed(0)).images
    assert img.shape == (1, 16, 16, 3)


def test_lora_final_model(tmp_path, data):
    from diffusers import StableDiffusionPipeline
    seppo_train("seppo", tmp_path, "train_lora_rank=4", "train_max_updates=4", data=data)
    final = tmp_path / "final"
    base = json.loads((final / "seppo_base.json").read_text())["base_model"]
    pipe = StableDiffusionPipeline.from_pretrained(base, safety_checker=None, requires_safety_checker=False)
    x, t = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([500])
    emb = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = pipe.unet(x, t, encoder_hidden_states=emb).sample
        pipe.load_lora_weights(final)
        after = pipe.unet(x, t, encoder_hidden_states=emb).sample
    assert any("lora" in k for k in pipe.unet.state_dict())
    assert (after - before).abs().max() > 0, "the trained LoRA weights change nothing"
    # only LoRA tensors were checkpointed
    ck = load_file(tmp_path / "checkpoints" / "step-4" / "model.safetensors")
    assert ck and all("lora" in k for k in ck)


def test_non_finite_loss_stops_and_keeps_checkpoint(tmp_path, data):
    r = seppo_train("seppo", tmp_path, fault="nan_loss@5", check=False, data=data)
    assert r.returncode != 0
    assert "non-finite loss at update 5" in r.stderr and "step-4" in r.stderr, r.stderr[-2000:]
    ck = tmp_path / "checkpoints" / "step-4"
    assert not (tmp_path / "checkpoints" / "step-6").exists() and not (tmp_path / "final").exists()
    before = {p.relative_to(ck): p.read_bytes() for p in ck.rglob("*") if p.is_file()}
    seppo_train("seppo", tmp_path, resume=True, data=data)       # the checkpoint is intact and resumes
    assert {p.relative_to(ck): p.read_bytes() for p in ck.rglob("*") if p.is_file()} == before
    assert (tmp_path / "final").is_dir()


def test_config_errors_name_the_problem(tmp_path):
    r = subprocess.run([SEPPO, "train", "--config", str(EXAMPLES / "tiny-sft.yaml"),
                        "--set", "train_lerning_rate=1"], env=env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "unknown config key 'train_lerning_rate'" in r.stderr
    r = subprocess.run([SEPPO, "train", "--config", str(EXAMPLES / "tiny-sft.yaml"),
                        "--set", "train_batch_size=two"], env=env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "train_batch_size" in r.stderr and "integer" in r.stderr


def torchrun(method, out, nproc, batch, data):
    # Adam with a large ε behaves like momentum SGD: parameters whose gradient is analytically zero (a conv bias
    # before a GroupNorm) then stay put instead of taking ±lr steps on float rounding noise, which differs between
    # a batch of 2 and a batch of 4. What remains compared is the data sharding, the per-sample draws and the
    # reference selection across processes.
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--standalone",
           "--no-python", SEPPO, "train", "--config", str(EXAMPLES / f"tiny-{method}.yaml"), "--output-dir", str(out),
           "--no-progress", "--set", f"data_path={data}",
           *[a for s in FAST + ["train_max_updates=3", f"train_batch_size={batch}", "train_checkpoint_every=0",
                                "ref_snapshot_every=1", "train_lr=0.1", "train_adam_eps=1.0"] for a in ("--set", s)]]
    r = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{r.stdout[-2000:]}\n{r.stderr[-5000:]}"


@pytest.mark.parametrize("method", ["sft", "dpo", "seppo"])
def test_two_processes_match_one_with_doubled_batch(tmp_path, data, method):
    torchrun(method, tmp_path / "two", nproc=2, batch=2, data=data)
    torchrun(method, tmp_path / "one", nproc=1, batch=4, data=data)
    a, b = final_weights(tmp_path / "two"), final_weights(tmp_path / "one")
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-5, worst
    from seppo.core.models import tiny_components
    init = tiny_components(0).unet.state_dict()
    assert max((a[k] - init[k]).abs().max().item() for k in a) > 1e-4, "training did not move the weights"
    logs = [json.loads(line) for line in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    if method != "sft":
        assert all(len(set(r["ref_ids_per_process"])) == 1 and len(r["ref_ids_per_process"]) == 2 for r in logs)
        one = [json.loads(line) for line in (tmp_path / "one" / "log.jsonl").read_text().splitlines()]
        assert [r["ref_id"] for r in logs] == [r["ref_id"] for r in one]


def test_unreadable_images_are_skipped_and_counted(tmp_path, data):
    import pandas as pd
    df = pd.read_parquet(next(Path(data).glob("*.parquet")))
    df.loc[df.label_0 == 1.0, "jpg_0"] = b"not an image"        # every winner stored in column 0 is corrupt
    bad = tmp_path / "corrupt.parquet"
    df.to_parquet(bad)
    seppo_train("sft", tmp_path / "run", "data_source=pickapic", f"data_path={bad}", "train_max_updates=3",
                "train_checkpoint_every=0")
    logs = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert logs[-1]["data/skipped"] > 0
    r = seppo_train("sft", tmp_path / "raise", "data_source=pickapic", f"data_path={bad}", "data_on_error=raise",
                    "train_max_updates=3", check=False)
    assert r.returncode != 0 and "cannot read image" in r.stderr, r.stderr[-2000:]


def test_accumulation_cached_latents_and_checkpointing(tmp_path, data):
    """Gradient accumulation, precomputed VAE latents and gradient checkpointing together, with SePPO."""
    seppo_train("seppo", tmp_path, "train_grad_accum=2", "data_precompute_latents=true",
                "train_gradient_checkpointing=true", "train_max_updates=3", "train_checkpoint_every=0", data=data)
    logs = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["update"] for r in logs] == [1, 2, 3] and all(r["loss"] == r["loss"] for r in logs)
    trained = final_weights(tmp_path)
    from seppo.core.models import tiny_components
    start = tiny_components(0).unet.state_dict()
    assert any(not torch.equal(trained[k], start[k]) for k in trained)


def test_a_world_config_trains_from_python(tmp_path):
    "train() resolves `model_path: world` and `data_source: world` itself (registered sources): no CLI in between."
    from seppo.core.config import load_config
    from seppo.core.trainer import train
    root = Path(__file__).resolve().parents[1]
    cfg = load_config(root / "configs" / "world" / "common.yaml", train_method="seppo", output_dir=str(tmp_path / "run"),
                      world_cache_dir=str(tmp_path / "cache"), world_base_steps=20, world_pairs_per_prompt=1,
                      train_batch_size=8, train_max_updates=2, train_checkpoint_every=0, ref_snapshot_every=1,
                      sample_num_steps=2)
    summary = train(cfg, progress=False)
    assert summary["updates"] == 2 and (tmp_path / "run" / "final" / "model_index.json").is_file()
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "cache").iterdir() if not p.name.startswith("."))[:1] == ["base"]
