"""The performance levers change cost, not results: batched reference sampling, the reference inside a LoRA UNet
(no second UNet), and a half-precision reference copy."""
import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from trainrun import EXAMPLES, FAST, SEPPO, assert_bitwise_equal, env, final_weights, seppo_train

LORA = "pytorch_lora_weights.safetensors"


def logs(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_batched_reference_sampling_is_the_same_run(tmp_path, data):
    # 3 micro-batches of 2 per update; chunks of 4 straddle the micro-batches' borders
    common = ["train_batch_size=2", "train_grad_accum=3", "train_max_updates=3", "ref_snapshot_every=1",
              "train_checkpoint_every=0", "sample_scheduler=ddpm"]   # DDPM: fresh noise at every sampling step
    seppo_train("seppo", tmp_path / "micro", *common, data=data)
    seppo_train("seppo", tmp_path / "batched", *common, "sample_batch_size=4", data=data)
    a, b = final_weights(tmp_path / "micro"), final_weights(tmp_path / "batched")
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-6, worst
    la, lb = logs(tmp_path / "micro"), logs(tmp_path / "batched")
    assert max(abs(x["loss"] - y["loss"]) for x, y in zip(la, lb)) < 1e-6
    assert [x["ref_id"] for x in la] == [y["ref_id"] for y in lb]
    for key in ("time/data", "time/sampling", "time/optimizer", "time/snapshot", "time/ref_forward"):
        assert all(key in r for r in lb), key


@pytest.mark.parametrize("method,fault", [("dpo", "after_step@3"), ("seppo", "after_snapshot@6")])
def test_shared_reference_is_the_copy(tmp_path, data, method, fault):
    """LoRA: the reference inside the trained UNet (adapters off / a second adapter slot) trains exactly as a
    frozen copy does, also across a crash and resume (the slot is refilled from the pool)."""
    lora = ["train_lora_rank=4", "train_lr=1e-2"]
    seppo_train(method, tmp_path / "copy", *lora, "ref_model=copy", data=data)
    r = seppo_train(method, tmp_path / "shared", *lora, "ref_model=shared", fault=fault, check=False, data=data)
    assert r.returncode == 17, r.stderr[-3000:]
    seppo_train(method, tmp_path / "shared", *lora, "ref_model=shared", resume=True, data=data)
    a, b = (load_file(tmp_path / run / "final" / LORA) for run in ("copy", "shared"))
    assert_bitwise_equal(a, b)
    assert all(".ref." not in k for k in b)                       # the reference slot is not part of the model
    assert any(v.abs().max() > 0 for k, v in a.items() if "lora_B" in k), "LoRA did not train"
    if method == "seppo":
        la, lb = logs(tmp_path / "copy"), logs(tmp_path / "shared")
        assert [x["ref_id"] for x in la] == [y["ref_id"] for y in lb] and max(x["ref_id"] for x in la) > 0


def test_shared_reference_in_two_processes(tmp_path, data):
    """Two processes with the reference inside the DDP-wrapped UNet match one process with the doubled batch."""
    def run(out, nproc, batch):
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--standalone",
               "--no-python", SEPPO, "train", "--config", str(EXAMPLES / "tiny-seppo.yaml"), "--output-dir", str(out),
               "--no-progress", "--set", f"data_path={data}",
               *[a for s in FAST + ["train_max_updates=3", f"train_batch_size={batch}", "train_checkpoint_every=0",
                                    "ref_snapshot_every=1", "train_lr=0.1", "train_adam_eps=1.0",
                                    "train_lora_rank=4", "ref_model=shared"] for a in ("--set", s)]]
        r = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"{r.stdout[-2000:]}\n{r.stderr[-5000:]}"
        return load_file(out / "final" / LORA)
    a, b = run(tmp_path / "two", 2, 2), run(tmp_path / "one", 1, 4)
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-5, worst
    assert max(v.abs().max().item() for k, v in a.items() if "lora_B" in k) > 1e-3, "LoRA did not train"


def test_reference_kinds_and_dtypes():
    from seppo.core.config import load_config
    from seppo.core.models import AdapterView
    from seppo.core.trainer import setup_models
    size = lambda m: sum(p.numel() * p.element_size() for p in m.parameters())
    comps, ref = setup_models(load_config(train_method="dpo"))                         # full fine-tune: a copy
    assert not isinstance(ref, AdapterView) and next(ref.parameters()).dtype == torch.float32
    assert size(ref) == size(comps.unet)
    comps, ref = setup_models(load_config(train_method="seppo", train_mixed_precision="bf16"))
    assert {p.dtype for p in ref.parameters()} == {torch.bfloat16}                     # half precision under bf16
    assert next(comps.unet.parameters()).dtype == torch.float32 and size(ref) * 2 == size(comps.unet)
    _, ref = setup_models(load_config(train_method="seppo", ref_dtype="float16"))
    assert {p.dtype for p in ref.parameters()} == {torch.float16}
    comps, ref = setup_models(load_config(train_method="seppo", train_lora_rank=4))    # LoRA: the UNet itself
    assert isinstance(ref, AdapterView) and ref.adapter == "ref" and ref.module is comps.unet
    trainable = [n for n, p in comps.unet.named_parameters() if p.requires_grad]
    assert trainable and all(".default." in n for n in trainable)
    _, ref = setup_models(load_config(train_method="dpo", train_lora_rank=4))
    assert isinstance(ref, AdapterView) and ref.adapter is None
    _, ref = setup_models(load_config(train_method="dpo", train_lora_rank=4, ref_model="copy"))
    assert not isinstance(ref, AdapterView)
    assert setup_models(load_config(train_method="sft", train_lora_rank=4))[1] is None
    with pytest.raises(ValueError, match="ref_model 'shared' needs LoRA"):
        setup_models(load_config(train_method="seppo", ref_model="shared"))
    with pytest.raises(ValueError, match="ref_dtype 'bfloat16' is for a copied reference"):
        setup_models(load_config(train_method="seppo", train_lora_rank=4, ref_dtype="bfloat16"))


def test_half_precision_reference_trains(tmp_path, data):
    seppo_train("seppo", tmp_path, "train_mixed_precision=bf16", "train_max_updates=2", "ref_snapshot_every=1",
                "train_checkpoint_every=0", data=data)
    rec = logs(tmp_path)
    assert [r["update"] for r in rec] == [1, 2] and all(r["loss"] == r["loss"] for r in rec)


def test_posterior_draws_cached_or_not(tmp_path, data):
    """data_latent: sample draws each latent from the VAE posterior with the sample's own generator, so cached
    latents (mean and std) train as encoding every time does; the draw differs from the posterior mean."""
    common = ["train_max_updates=3", "train_checkpoint_every=0", "ref_snapshot_every=1", "data_random_flip=false"]
    seppo_train("seppo", tmp_path / "direct", *common, "data_latent=sample", data=data)
    seppo_train("seppo", tmp_path / "cached", *common, "data_latent=sample", "data_precompute_latents=true", data=data)
    seppo_train("seppo", tmp_path / "mean", *common, data=data)
    a, b, m = (final_weights(tmp_path / run) for run in ("direct", "cached", "mean"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    assert max((a[k] - m[k]).abs().max().item() for k in a) > 1e-5, "the posterior draw changed nothing"
