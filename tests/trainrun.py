"""Helpers of the tests that train in real processes: the `seppo train` console script, small fast settings."""
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
SEPPO = str(Path(sys.executable).parent / "seppo")   # the console script installed with the package
EXAMPLES = ROOT / "configs" / "examples"
# small and fast: 8 updates, a snapshot every 3, a checkpoint every 2
FAST = ["train_max_updates=8", "train_checkpoint_every=2", "train_checkpoints_keep=0", "ref_snapshot_every=3",
        "data_toy_size=24", "train_batch_size=4", "sample_num_steps=2"]


FAULTS = Path(__file__).resolve().parent / "faults"  # its sitecustomize.py installs the fault of SEPPO_TEST_FAULT


def fault_env(fault):
    "Environment entries that make `fault` (point@n, see tests/faults/sitecustomize.py) happen in a started process."
    if not fault: return {}
    return {"SEPPO_TEST_FAULT": fault,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(FAULTS), os.environ.get("PYTHONPATH")]))}


def env(**extra):
    e = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    e.pop("SEPPO_TEST_FAULT", None)
    e.update(extra)
    return e


def seppo_train(method, out, *sets, fault=None, resume=False, overwrite=False, check=True, data=None):
    cmd = [SEPPO, "train", "--config", str(EXAMPLES / f"tiny-{method}.yaml"),
           "--output-dir", str(out), "--no-progress", *[a for s in FAST + list(sets) for a in ("--set", s)]]
    if data: cmd += ["--set", f"data_path={data}"]
    if resume: cmd.append("--resume")
    if overwrite: cmd.append("--overwrite")
    r = subprocess.run(cmd, env=env(**fault_env(fault)), capture_output=True, text=True, timeout=600)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}")
    return r


def final_weights(out):
    return load_file(Path(out) / "final" / "unet" / "diffusion_pytorch_model.safetensors")


def assert_bitwise_equal(a, b):
    assert a.keys() == b.keys()
    diff = [k for k in a if not torch.equal(a[k], b[k])]
    assert not diff, f"{len(diff)} tensors differ, e.g. {diff[:3]}"
