"""The trainer's sharded branches (DeepSpeed ZeRO / FSDP) against a stand-in accelerator, in one process: what the
branches do with what accelerate returns (the gathered weights, the state folder), checked piece by piece.
tests/test_sharded_cpu.py runs the same branches for real in two CPU processes, scripts/gpu_sharded_check.sh on a GPU."""
import json
from pathlib import Path

import pytest
import torch
from accelerate.utils import DistributedType

from seppo.core import trainer as tr
from seppo.core.checkpoints import verify_checkpoint
from seppo.core.config import load_config
from seppo.core.models import tiny_components
from seppo.core.reference import ReferencePool


class StandIn:
    "The part of `Accelerator` the sharded branches call, for one process; records the state-API calls."
    def __init__(self, kind=DistributedType.FSDP, main=True):
        self.distributed_type, self.is_main_process, self.process_index, self.num_processes = kind, main, 0, 1
        self.scaler, self.calls = None, []
    def wait_for_everyone(self): pass
    def unwrap_model(self, m): return m
    def get_state_dict(self, m):
        self.calls.append("get_state_dict")
        return {k: v.clone() for k, v in m.state_dict().items()} if self.is_main_process else {}
    def save_state(self, path):
        self.calls.append(("save_state", Path(path).name))
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "model.safetensors").write_bytes(b"shard")
    def load_state(self, path): self.calls.append(("load_state", Path(path).name))


@pytest.fixture
def unet():
    return tiny_components(0).unet


def test_snapshots_are_the_gathered_trainable_weights(unet):
    names = {n for n, _ in unet.named_parameters() if n.startswith("conv_in")}
    acc = StandIn()
    state = tr.full_trainable_state(acc, unet, unet, names)
    assert set(state) == names and acc.calls == ["get_state_dict"]
    assert all(torch.equal(state[k], unet.state_dict()[k]) and state[k].device.type == "cpu" for k in names)
    state["conv_in.weight"].add_(1)                                      # a copy, not the module's tensor
    assert not torch.equal(state["conv_in.weight"], unet.conv_in.weight)
    plain = StandIn(DistributedType.MULTI_CPU)
    assert set(tr.full_trainable_state(plain, unet, unet, names)) == {n for n, p in unet.named_parameters() if p.requires_grad}
    assert plain.calls == []                                             # unsharded: the module's own weights


def test_the_exported_model_holds_the_gathered_weights(unet):
    out = tr.exportable_unet(StandIn(DistributedType.DEEPSPEED), unet)
    assert out is not unet and type(out) is type(unet)
    assert all(torch.equal(a, b) for a, b in zip(out.state_dict().values(), unet.state_dict().values()))
    assert tr.exportable_unet(StandIn(main=False), unet) is None         # only the main process saves
    assert tr.exportable_unet(StandIn(DistributedType.NO), unet) is unet


def test_a_sharded_checkpoint_goes_through_the_state_api(tmp_path, unet):
    cfg = load_config(output_dir=str(tmp_path))
    acc = StandIn(DistributedType.DEEPSPEED)
    opt = torch.optim.AdamW(unet.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    pool = ReferencePool(strategy="random", seed=0)
    pool.add(tr.trainable_state_dict(unet), step=0)
    ck = tr.save_checkpoint(acc, unet, opt, sched, pool, cfg, 2, dataset=None)
    files = sorted(p.relative_to(ck).as_posix() for p in ck.rglob("*") if p.is_file())
    assert "accelerate/model.safetensors" in files and "model.safetensors" not in files and "optimizer.safetensors" not in files
    state = verify_checkpoint(ck)                                        # the state folder is under the checksums
    assert state["distributed_type"] == "DEEPSPEED" and acc.calls == [("save_state", tr.ACCELERATE_STATE)]
    assert "accelerate/model.safetensors" in json.loads((ck / "checksums.json").read_text())["files"]
    tr.load_checkpoint(ck, unet, opt, sched, None, 0, None, acc)
    assert acc.calls[-1] == ("load_state", tr.ACCELERATE_STATE)
    plain = tr.save_checkpoint(StandIn(DistributedType.NO), unet, opt, sched, pool, cfg, 4, dataset=None)
    assert (plain / "model.safetensors").is_file() and not (plain / tr.ACCELERATE_STATE).exists()
    assert verify_checkpoint(plain)["distributed_type"] == "NO"
