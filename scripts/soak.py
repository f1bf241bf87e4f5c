"""Soak test (not in CI): 2,000 SePPO updates of the tiny model on the CPU with a capped reference pool.

Checks, and writes to results/soak/cpu.json and results/soak/cpu.md:
- RSS stays flat after warm-up: the resident memory at the last update is within FLAT_MIB of that at update WARMUP
  (the rule was set before the first measurement);
- the pool holds exactly its cap from the moment it fills, never more;
- a run stopped right after its checkpoint at update 1,000 and resumed ends with the same final weights, bit for bit.

    .venv/bin/python scripts/soak.py [--updates 2000] [--out runs/soak]     (about 10 minutes on 2 CPU cores)
"""
import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from seppo.core.config import load_config
from seppo.core.hooks import add_hook
from seppo.core.trainer import train

WARMUP, FLAT_MIB, EVERY = 200, 10.0, 20


def rss_mib()->float:
    "This process's resident set size, MiB (Linux /proc)."
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"): return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class Stopped(Exception): pass


def config(out, updates, pool_max):
    return load_config(model_path="tiny", data_source="toy", data_toy_size=64, train_method="seppo", train_batch_size=4,
                       train_max_updates=updates, ref_snapshot_every=10, ref_pool_max=pool_max, ref_pool_storage="cpu",
                       sample_num_steps=2, train_checkpoint_every=250, train_checkpoints_keep=2, train_log_every=1,
                       train_cpu=True, output_dir=str(out))


def final_weights(out):
    return load_file(Path(out) / "final" / "unet" / "diffusion_pytorch_model.safetensors")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--updates", type=int, default=2000)
    ap.add_argument("--pool-max", type=int, default=4)
    ap.add_argument("--out", default="runs/soak")
    ap.add_argument("--results", default="results/soak")
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    out = Path(a.out)
    if out.exists(): shutil.rmtree(out)
    half = a.updates // 2

    curve = []
    remove = add_hook("after_step", lambda update: curve.append((update, rss_mib())) if update % EVERY == 0 or update == 1 else None)
    t0 = time.perf_counter()
    train(config(out / "whole", a.updates, a.pool_max), progress=False)
    whole_s = time.perf_counter() - t0
    remove()

    def stop(update):
        if update == half: raise Stopped
    remove = add_hook("after_checkpoint", stop)
    try: train(config(out / "cut", a.updates, a.pool_max), progress=False)
    except Stopped: pass
    finally: remove()
    train(config(out / "cut", a.updates, a.pool_max), resume=True, progress=False)
    a_w, b_w = final_weights(out / "whole"), final_weights(out / "cut")
    same = a_w.keys() == b_w.keys() and all(torch.equal(a_w[k], b_w[k]) for k in a_w)

    log = [json.loads(line) for line in (out / "whole" / "log.jsonl").read_text().splitlines()]
    sizes = [r["pool_size"] for r in log]
    full_at = next(r["update"] for r in log if r["pool_size"] == a.pool_max)
    pool_exact = max(sizes) == a.pool_max and all(s == a.pool_max for s in sizes[full_at - 1:])
    rss = dict(curve)
    at = lambda u: rss[max(k for k in rss if k <= u)]            # the last sample at or before update u
    start, end, mid = at(WARMUP), at(a.updates), at(half)
    flat = abs(end - start) <= FLAT_MIB
    result = {"updates": a.updates, "pool_max": a.pool_max, "snapshot_every": 10, "pool_full_at_update": full_at,
              "pool_size_max": max(sizes), "pool_exact": pool_exact, "rss_mib": curve, "rss_first": rss[1],
              "rss_warmup": start, "rss_half": mid, "rss_end": end, "flat_rule_mib": FLAT_MIB, "flat": flat,
              "resume_at": half, "resume_bitwise_equal": same, "seconds_whole_run": round(whole_s, 1),
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"}
    res = Path(a.results)
    res.mkdir(parents=True, exist_ok=True)
    (res / "cpu.json").write_text(json.dumps(result, indent=1) + "\n")
    md = [f"# Soak: {a.updates} SePPO updates of the tiny model on the CPU (`scripts/soak.py`)", "",
          f"Machine: {result['machine']}; whole run {whole_s:.0f} s.", "",
          "| check | measured | rule | holds |", "|---|---|---|---|",
          f"| RSS after warm-up (update {WARMUP}) → end (update {a.updates}) | {start:.1f} → {end:.1f} MiB "
          f"(update 1: {rss[1]:.1f}, update {half}: {mid:.1f}) | within {FLAT_MIB:.0f} MiB | {'yes' if flat else 'NO'} |",
          f"| pool size (cap {a.pool_max}, a snapshot every 10 updates) | full at update {full_at}, at most {max(sizes)} "
          f"| exactly the cap once full | {'yes' if pool_exact else 'NO'} |",
          f"| final weights, resumed at update {half} vs uninterrupted | {'bit for bit equal' if same else 'differ'} "
          f"| equal | {'yes' if same else 'NO'} |", ""]
    (res / "cpu.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0 if flat and pool_exact and same else 1


if __name__ == "__main__":
    sys.exit(main())
