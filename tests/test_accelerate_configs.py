"""The shipped accelerate configs parse with accelerate's own reader and set what the trainer's sharded paths rely
on; the trainer refuses what those paths do not support."""
from pathlib import Path
from types import SimpleNamespace

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.utils import DistributedType

from seppo.core import trainer as tr
from seppo.core.config import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "accelerate"


def test_the_three_configs_parse_and_shard_as_documented():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == ["ddp.yaml", "fsdp.yaml", "zero2.yaml"]
    ddp, zero2, fsdp = (load_config_from_file(str(CONFIGS / f)) for f in ("ddp.yaml", "zero2.yaml", "fsdp.yaml"))
    assert ddp.distributed_type == DistributedType.MULTI_GPU and not ddp.use_cpu
    assert zero2.distributed_type == DistributedType.DEEPSPEED and zero2.deepspeed_config["zero_stage"] == 2
    assert fsdp.distributed_type == DistributedType.FSDP
    # FSDP2 with the weights kept gathered from forward to backward: torch's SHARD_GRAD_OP
    assert fsdp.fsdp_config["fsdp_version"] == 2 and fsdp.fsdp_config["fsdp_reshard_after_forward"] is False
    assert {c.num_processes for c in (ddp, zero2, fsdp)} == {8} and {c.mixed_precision for c in (ddp, zero2, fsdp)} == {"bf16"}


def fake_accelerator(kind, stage=2, n=8):
    ds = {"zero_optimization": {"stage": stage}, "train_micro_batch_size_per_gpu": "auto"}
    state = SimpleNamespace(deepspeed_plugin=SimpleNamespace(deepspeed_config=ds))
    return SimpleNamespace(distributed_type=kind, state=state, num_processes=n), ds


def test_sharding_checks_and_deepspeed_settings():
    cfg = load_config(train_batch_size=2, train_grad_accum=16, train_max_grad_norm=0.5)
    acc, ds = fake_accelerator(DistributedType.DEEPSPEED)
    tr.check_sharding(acc, cfg)
    assert (ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"], ds["gradient_clipping"],
            ds["train_batch_size"]) == (2, 16, 0.5, 2 * 16 * 8)
    with pytest.raises(ValueError, match="ZeRO stage 3"):
        tr.check_sharding(fake_accelerator(DistributedType.DEEPSPEED, stage=3)[0], cfg)
    for kind in (DistributedType.DEEPSPEED, DistributedType.FSDP):
        with pytest.raises(ValueError, match="LoRA trains a few MB"):
            tr.check_sharding(fake_accelerator(kind)[0], load_config(train_lora_rank=4))
    for kind in (DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU):
        acc, ds = fake_accelerator(kind)
        tr.check_sharding(acc, load_config(train_lora_rank=4))          # DDP takes LoRA, and nothing is set
        assert not tr.is_sharded(acc) and ds["train_micro_batch_size_per_gpu"] == "auto"
