"""Memory-lean training options: Adafactor, 8-bit AdamW (bitsandbytes, GPU only) and offloading the frozen parts."""
import sys
import types

import pytest
import torch
from safetensors.torch import load_file

from seppo.core import trainer as tr
from seppo.core.config import ConfigError, load_config
from seppo.core.hooks import add_hook
from seppo.utils import load_state

from trainrun import assert_bitwise_equal

FAST = {"train_max_updates": 4, "train_batch_size": 2, "data_toy_size": 8, "sample_num_steps": 2,
        "ref_snapshot_every": 2, "train_checkpoint_every": 2, "train_checkpoints_keep": 0, "train_cpu": True}


def run(out, resume=False, **over):
    return tr.train(load_config(**FAST | {"output_dir": str(out)} | over), resume=resume, progress=False)


def weights(out):
    return load_file(out / "final" / "unet" / "diffusion_pytorch_model.safetensors")


class Stop(Exception): pass


def test_adafactor_trains_with_factored_states_and_resumes_exactly(tmp_path):
    run(tmp_path / "whole", train_optimizer="adafactor", train_lr=1e-3)
    opt = load_state(tmp_path / "whole" / "checkpoints" / "step-4" / "optimizer.safetensors")
    keys = {k for s in opt["state"].values() for k in s}
    assert "exp_avg_sq_row" in keys and "exp_avg" not in keys, keys   # factored second moments, no first moment
    def stop(update):
        if update == 3: raise Stop
    remove = add_hook("after_step", stop)
    try:
        with pytest.raises(Stop): run(tmp_path / "cut", train_optimizer="adafactor", train_lr=1e-3)
    finally: remove()
    run(tmp_path / "cut", resume=True, train_optimizer="adafactor", train_lr=1e-3)
    assert_bitwise_equal(weights(tmp_path / "whole"), weights(tmp_path / "cut"))
    run(tmp_path / "adamw", train_lr=1e-3)
    a, b = weights(tmp_path / "whole"), weights(tmp_path / "adamw")
    assert any(not torch.equal(a[k], b[k]) for k in a)     # another optimizer, other weights


def test_adamw8bit_needs_bitsandbytes_and_a_gpu(monkeypatch):
    params = [torch.nn.Parameter(torch.zeros(3))]
    cfg = load_config(train_optimizer="adamw8bit", train_lr=3e-4, train_adam_eps=1e-6)
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)           # not installed
    with pytest.raises(ValueError, match="needs bitsandbytes, which is not installed"):
        tr.build_optimizer(params, cfg, "cpu")
    made = {}
    class AdamW8bit:
        def __init__(self, params, **kw): made.update(kw)
    fake = types.SimpleNamespace(optim=types.SimpleNamespace(AdamW8bit=AdamW8bit))
    monkeypatch.setitem(sys.modules, "bitsandbytes", fake)
    with pytest.raises(ValueError, match="runs on a CUDA GPU; this run's device is cpu"):
        tr.build_optimizer(params, cfg, "cpu")
    assert isinstance(tr.build_optimizer(params, cfg, "cuda"), AdamW8bit)
    assert made == {"lr": 3e-4, "betas": (0.9, 0.999), "weight_decay": 0.01, "eps": 1e-6}


def test_optimizer_choices_are_checked():
    with pytest.raises(ConfigError, match="train_optimizer"):
        load_config(train_optimizer="sgd")
    assert isinstance(tr.build_optimizer([torch.nn.Parameter(torch.zeros(2))], load_config(), "cpu"), torch.optim.AdamW)


def test_offloaded_moves_modules_there_and_back():
    moves = []
    class Spy(torch.nn.Linear):
        def to(self, *args, **kw):
            moves.append(str(args[0]))
            return self
    a, b = Spy(2, 2), Spy(2, 2)
    with tr.offloaded("cuda:1", True, a, None, b):
        assert moves == ["cuda:1", "cuda:1"]
    assert moves == ["cuda:1", "cuda:1", "cpu", "cpu"]
    with pytest.raises(RuntimeError):
        with tr.offloaded("cuda:1", True, a): raise RuntimeError("the block failed")
    assert moves[-2:] == ["cuda:1", "cpu"]                            # moved back also when the block fails
    moves.clear()
    with tr.offloaded("cuda:1", False, a): pass
    with tr.reference_context(a, offload_to="cuda:0") as ref: assert ref is a
    assert moves == ["cuda:0", "cpu"]


@pytest.mark.parametrize("over", [{"train_method": "seppo"}, {"train_method": "dpo", "data_precompute_latents": True}])
def test_offload_changes_no_number(tmp_path, over):
    run(tmp_path / "on", train_offload=True, **over)
    run(tmp_path / "off", **over)
    assert_bitwise_equal(weights(tmp_path / "on"), weights(tmp_path / "off"))
