"""The FSDP path in two real CPU processes: `accelerate launch` with the shipped configs/accelerate/fsdp.yaml (only its
process count and mixed precision changed for CPU), torch's FSDP2 on gloo. accelerate would run CPU processes as
MULTI_CPU, so tests/faults/cpu_fsdp.py sets the FSDP state it sets on GPUs; the trainer's sharded branches then run
for real: gathered pool snapshots, the reference on every process, accelerate's save_state / load_state, the
gathered final model."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from trainrun import EXAMPLES, FAST, FAULTS, SEPPO, assert_bitwise_equal, env, fault_env, final_weights

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE = str(Path(sys.executable).parent / "accelerate")
# as tests/test_trainer.py's two-process test: Adam with a large ε keeps parameters with an analytically zero gradient
# still, so what is compared is the arithmetic of the split, not Adam's sign of rounding noise
SETS = FAST + ["train_max_updates=6", "train_batch_size=2", "ref_pool_storage=disk", "train_lr=0.1",
               "train_adam_eps=1.0"]


@pytest.fixture(scope="module")
def fsdp_config(tmp_path_factory):
    cfg = yaml.safe_load((ROOT / "configs" / "accelerate" / "fsdp.yaml").read_text())
    assert cfg["distributed_type"] == "FSDP" and cfg["fsdp_config"]["fsdp_version"] == 2
    cfg |= {"num_processes": 2, "mixed_precision": "no"}
    path = tmp_path_factory.mktemp("accelerate") / "fsdp_cpu.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def train_args(out, data, resume=False, method="seppo"):
    args = ["train", "--config", str(EXAMPLES / f"tiny-{method}.yaml"), "--output-dir", str(out), "--no-progress",
            "--set", f"data_path={data}", *[a for s in SETS for a in ("--set", s)]]
    return args + (["--resume"] if resume else [])


def fsdp_train(config, out, data, fault=None, resume=False, method="seppo"):
    e = env(**{"PYTHONPATH": str(FAULTS), **fault_env(fault)}, SEPPO_TEST_CPU_FSDP="1")
    cmd = [ACCELERATE, "launch", "--config_file", str(config), SEPPO, *train_args(out, data, resume, method)]
    return subprocess.run(cmd, env=e, capture_output=True, text=True, timeout=600)


def ddp_train(out, data, method):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", "--no-python", SEPPO,
           *train_args(out, data, method=method)]
    return subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=600)


def records(out):
    return [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method", ["sft", "dpo", "seppo"])
def test_fsdp_two_processes_train_as_ddp_does(tmp_path, data, fsdp_config, method):
    r = fsdp_train(fsdp_config, tmp_path / "fsdp", data, method=method)
    assert r.returncode == 0, r.stderr[-5000:]
    r = ddp_train(tmp_path / "ddp", data, method)
    assert r.returncode == 0, r.stderr[-5000:]
    fsdp, ddp = tmp_path / "fsdp", tmp_path / "ddp"
    state = json.loads((fsdp / "checkpoints" / "step-6" / "trainer_state.json").read_text())
    assert state["distributed_type"] == "FSDP" and state["world_size"] == 2
    assert json.loads((ddp / "checkpoints" / "step-6" / "trainer_state.json").read_text())["distributed_type"] == "MULTI_CPU"
    shards = fsdp / "checkpoints" / "step-6" / "accelerate"
    assert (shards / "pytorch_model_fsdp_0").is_dir() and (shards / "optimizer_0").is_dir()   # accelerate's FSDP state
    # the reference draw is one draw for both processes, and the same as DDP's; so are the losses
    a, b = records(fsdp), records(ddp)
    if method != "sft":
        assert all(len(set(x["ref_ids_per_process"])) == 1 for x in a)
        assert [x["ref_id"] for x in a] == [x["ref_id"] for x in b]
    # (the weights agree to ~1e-7; SePPO's β-scaled log-sigmoid turns that into up to ~4e-5 on a loss of 0.2)
    assert max(abs(x["loss"] - y["loss"]) for x, y in zip(a, b)) < 1e-4
    # the pool's snapshots are the whole trained weights, gathered: every tensor at its full shape, as under DDP
    snaps = sorted((fsdp / "pool").glob("*.safetensors"))
    assert len(snaps) == len(list((ddp / "pool").glob("*.safetensors"))) >= {"sft": 0, "dpo": 1, "seppo": 3}[method]
    for f in snaps:
        s, t = load_file(f), load_file(ddp / "pool" / f.name)
        assert s.keys() == t.keys() and all(s[k].shape == t[k].shape for k in s)
        assert max((s[k] - t[k]).abs().max().item() for k in s) < 1e-6, f.name
    # the exported model holds the gathered weights: those of DDP, and moved from the initial ones
    w, v = final_weights(fsdp), final_weights(ddp)
    assert w.keys() == v.keys() and max((w[k] - v[k]).abs().max().item() for k in w) < 1e-6
    from seppo.core.models import tiny_components
    init = tiny_components(0).unet.state_dict()
    assert max((w[k] - init[k]).abs().max().item() for k in w) > 1e-3, "training did not move the weights"


def test_fsdp_two_processes_resume_exactly(tmp_path, data, fsdp_config):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    r = fsdp_train(fsdp_config, whole, data)
    assert r.returncode == 0, r.stderr[-5000:]
    r = fsdp_train(fsdp_config, cut, data, fault="after_checkpoint@4")
    assert r.returncode != 0 and (cut / "checkpoints" / "step-4" / "accelerate").is_dir()
    assert not (cut / "final").exists()
    r = fsdp_train(fsdp_config, cut, data, resume=True)
    assert r.returncode == 0, r.stderr[-5000:]
    assert "resumed from" in r.stderr and "step-4" in r.stderr
    assert_bitwise_equal(final_weights(cut), final_weights(whole))
    assert [x["update"] for x in records(cut)] == list(range(1, 7))
    assert [x["loss"] for x in records(cut)] == [x["loss"] for x in records(whole)]

