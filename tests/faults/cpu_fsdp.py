"""accelerate's FSDP on CPU processes, for the two-process FSDP tests (imported by sitecustomize.py when
SEPPO_TEST_CPU_FSDP is set).

accelerate 1.16 picks its distributed type from the device: on CPU processes it is MULTI_CPU (gloo) even when
`accelerate launch` was given an FSDP config, and the FSDP plugin it built from that config is left unused. Torch's
FSDP2 (`fully_shard`) itself runs on gloo. This sets, right after accelerate has set up its state, the two things it
sets on GPUs: the FSDP distributed type with the plugin built from the config, and the one CPU device (accelerate
numbers CPU processes' devices `cpu:0`, which FSDP compares with the plain `cpu` its CPU tensors report). Everything
else (wrapping, gathering state dicts, save_state / load_state) is accelerate's and torch's own code.
"""
import torch
import accelerate.state as _state
from accelerate.utils import DistributedType

_init = _state.AcceleratorState.__init__


def _fsdp_on_cpu(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    plugin = kwargs.get("fsdp_plugin")
    if plugin is None or self.distributed_type != DistributedType.MULTI_CPU: return
    self.distributed_type, self.fsdp_plugin, self.device = DistributedType.FSDP, plugin, torch.device("cpu")
    _state.PartialState._shared_state.update(distributed_type=self.distributed_type, device=self.device)


_state.AcceleratorState.__init__ = _fsdp_on_cpu
