"""Fault injection for the crash tests, in the real processes they start (seppo train, torchrun workers, papermill
kernels): a test puts this folder on PYTHONPATH and sets SEPPO_TEST_FAULT=point@n, and Python imports this file at
start-up. It installs one hook (seppo.core.hooks) that, at hook point `point` when the update (or image count) is n:

- `nan_loss@n`   makes the update's loss NaN;
- `disk_full@n`  points the checkpoint's optimizer file at /dev/full, so its write fails as on a full disk;
- any other point (`after_step`, `after_snapshot`, `mid_checkpoint`, `after_checkpoint`, `eval_image`,
  `eval_score`) kills the process there with exit code 17, as a crash would.

With SEPPO_TEST_CPU_SHARDING set it also lets accelerate run FSDP and DeepSpeed on CPU processes (cpu_sharding.py
says how).
"""
import os

if os.environ.get("SEPPO_TEST_CPU_SHARDING"):
    import cpu_sharding  # noqa: F401

_spec = os.environ.get("SEPPO_TEST_FAULT")
if _spec:
    from seppo.core.hooks import add_hook

    _point, _at = _spec.rsplit("@", 1)
    _at = int(_at)
    if _point == "nan_loss":
        add_hook("loss", lambda loss, update: loss * float("nan") if update == _at else loss)
    elif _point == "disk_full":
        add_hook("before_checkpoint_write", lambda path, update: os.symlink("/dev/full", path) if update == _at else None)
    elif _point in ("eval_image", "eval_score"):
        add_hook(_point, lambda n: os._exit(17) if n == _at else None)
    else:
        add_hook(_point, lambda update: os._exit(17) if update == _at else None)
