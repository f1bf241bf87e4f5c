"""The sharded paths in two real CPU processes: `accelerate launch` with the shipped configs/accelerate/fsdp.yaml
(torch's FSDP2 on gloo) and zero2.yaml (DeepSpeed ZeRO-2 on its CPU accelerator, gloo), only their process count and
mixed precision changed for CPU. accelerate does not set these kinds up on a machine without an accelerator, so
tests/faults/cpu_sharding.py sets what it sets on GPUs; the trainer's sharded branches then run for real: the
DeepSpeed engine or FSDP's sharded parameters, gathered pool snapshots, the reference on every process, accelerate's
save_state / load_state, the gathered final model. Each run is compared with DDP on the same two processes."""
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
KINDS = {"fsdp": ("FSDP", ["pytorch_model_fsdp_0", "optimizer_0"]),
         "zero2": ("DEEPSPEED", ["pytorch_model"])}   # distributed type, accelerate's folders in a checkpoint
# DeepSpeed is skipped by accelerate under cpu=True (accelerate's "CPU only"), so it runs with train_cpu false
EXTRA = {"fsdp": [], "zero2": ["train_cpu=false"]}


@pytest.fixture(scope="module")
def launch_config(tmp_path_factory):
    def make(kind):
        cfg = yaml.safe_load((ROOT / "configs" / "accelerate" / f"{kind}.yaml").read_text())
        assert cfg["distributed_type"] == KINDS[kind][0]
        cfg |= {"num_processes": 2, "mixed_precision": "no"}
        path = tmp_path_factory.mktemp("accelerate") / f"{kind}_cpu.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path
    return {k: make(k) for k in KINDS}


def train_args(out, data, method="seppo", sets=(), resume=False):
    args = ["train", "--config", str(EXAMPLES / f"tiny-{method}.yaml"), "--output-dir", str(out), "--no-progress",
            "--set", f"data_path={data}", *[a for s in SETS + list(sets) for a in ("--set", s)]]
    return args + (["--resume"] if resume else [])


def sharded_train(configs, kind, out, data, method="seppo", fault=None, resume=False):
    e = env(**{"PYTHONPATH": str(FAULTS), **fault_env(fault)}, SEPPO_TEST_CPU_SHARDING="1")
    cmd = [ACCELERATE, "launch", "--config_file", str(configs[kind]), SEPPO,
           *train_args(out, data, method, EXTRA[kind], resume)]
    return subprocess.run(cmd, env=e, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, data):
    "The DDP run of a method on two CPU processes, made once."
    done = {}
    def get(method):
        if method not in done:
            out = tmp_path_factory.mktemp(f"ddp-{method}")
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", "--no-python",
                   SEPPO, *train_args(out, data, method)]
            r = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=600)
            assert r.returncode == 0, r.stderr[-5000:]
            done[method] = out
        return done[method]
    return get


def records(out):
    return [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("method", ["sft", "dpo", "seppo"])
def test_sharded_two_processes_train_as_ddp_does(tmp_path, data, launch_config, ddp_run, kind, method):
    out = tmp_path / kind
    r = sharded_train(launch_config, kind, out, data, method)
    assert r.returncode == 0, r.stderr[-5000:]
    ddp = ddp_run(method)
    state = json.loads((out / "checkpoints" / "step-6" / "trainer_state.json").read_text())
    assert state["distributed_type"] == KINDS[kind][0] and state["world_size"] == 2
    assert json.loads((ddp / "checkpoints" / "step-6" / "trainer_state.json").read_text())["distributed_type"] == "MULTI_CPU"
    shards = out / "checkpoints" / "step-6" / "accelerate"
    assert all((shards / name).is_dir() for name in KINDS[kind][1]), sorted(p.name for p in shards.iterdir())
    # the reference draw is one draw for both processes, and the same as DDP's; so are the losses
    a, b = records(out), records(ddp)
    if method != "sft":
        assert all(len(set(x["ref_ids_per_process"])) == 1 for x in a)
        assert [x["ref_id"] for x in a] == [x["ref_id"] for x in b]
    # (the weights agree to ~1e-7; SePPO's β-scaled log-sigmoid turns that into up to ~4e-5 on a loss of 0.2)
    assert max(abs(x["loss"] - y["loss"]) for x, y in zip(a, b)) < 1e-4
    # the pool's snapshots are the whole trained weights, gathered: every tensor at its full shape, as under DDP
    snaps = sorted((out / "pool").glob("*.safetensors"))
    assert len(snaps) == len(list((ddp / "pool").glob("*.safetensors"))) >= {"sft": 0, "dpo": 1, "seppo": 3}[method]
    for f in snaps:
        s, t = load_file(f), load_file(ddp / "pool" / f.name)
        assert s.keys() == t.keys() and all(s[k].shape == t[k].shape for k in s)
        assert max((s[k] - t[k]).abs().max().item() for k in s) < 1e-6, f.name
    # the exported model holds the gathered weights: those of DDP, and moved from the initial ones
    w, v = final_weights(out), final_weights(ddp)
    assert w.keys() == v.keys() and max((w[k] - v[k]).abs().max().item() for k in w) < 1e-6
    from seppo.core.models import tiny_components
    init = tiny_components(0).unet.state_dict()
    assert max((w[k] - init[k]).abs().max().item() for k in w) > 1e-3, "training did not move the weights"


@pytest.mark.parametrize("kind", list(KINDS))
def test_sharded_two_processes_resume_exactly(tmp_path, data, launch_config, kind):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    r = sharded_train(launch_config, kind, whole, data)
    assert r.returncode == 0, r.stderr[-5000:]
    r = sharded_train(launch_config, kind, cut, data, fault="after_checkpoint@4")
    assert r.returncode != 0 and (cut / "checkpoints" / "step-4" / "accelerate").is_dir()
    assert not (cut / "final").exists()
    r = sharded_train(launch_config, kind, cut, data, resume=True)
    assert r.returncode == 0, r.stderr[-5000:]
    assert "resumed from" in r.stderr and "step-4" in r.stderr
    assert_bitwise_equal(final_weights(cut), final_weights(whole))
    assert [x["update"] for x in records(cut)] == list(range(1, 7))
    assert [x["loss"] for x in records(cut)] == [x["loss"] for x in records(whole)]
