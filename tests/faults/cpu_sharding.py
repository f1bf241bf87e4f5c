"""accelerate's FSDP and DeepSpeed on CPU processes, for the two-process sharding tests (imported by sitecustomize.py
when SEPPO_TEST_CPU_SHARDING is set).

accelerate 1.16 derives the distributed setup from the device, and on a machine without an accelerator it never sets
up the sharded kinds the way it does on GPUs, although torch's FSDP2 (`fully_shard`) and DeepSpeed's CPU accelerator
both run on gloo:

- FSDP: CPU processes become MULTI_CPU even when `accelerate launch` was given an FSDP config, and the FSDP plugin
  built from that config is left unused. This sets, right after accelerate has set up its state, what it sets on
  GPUs: the FSDP distributed type with that plugin, and the one CPU device (accelerate numbers CPU processes'
  devices `cpu:0`, which FSDP compares with the plain `cpu` its CPU tensors report).
- DeepSpeed: accelerate finds no communication backend for a device-less machine, so DeepSpeed starts its gloo group
  but accelerate then counts one process of rank 0 in each. This names gloo as the backend, as
  `InitProcessGroupKwargs(backend="gloo")` would.

Everything else (wrapping, the DeepSpeed engine, gathering state dicts, save_state / load_state) is accelerate's,
torch's and DeepSpeed's own code.
"""
import os

import torch
import accelerate.state as _state
from accelerate.utils import DistributedType

_init = _state.AcceleratorState.__init__
_prepare_backend = _state.PartialState._prepare_backend


def _fsdp_on_cpu(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    plugin = kwargs.get("fsdp_plugin")
    if plugin is None or self.distributed_type != DistributedType.MULTI_CPU: return
    self.distributed_type, self.fsdp_plugin, self.device = DistributedType.FSDP, plugin, torch.device("cpu")
    _state.PartialState._shared_state.update(distributed_type=self.distributed_type, device=self.device)


def _gloo_for_deepspeed(self, cpu=False, sagemaker_dp=False, backend=None):
    if backend is None and os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true": backend = "gloo"
    return _prepare_backend(self, cpu, sagemaker_dp, backend)


_state.AcceleratorState.__init__ = _fsdp_on_cpu
_state.PartialState._prepare_backend = _gloo_for_deepspeed
