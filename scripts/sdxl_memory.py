"""Peak GPU memory of one SePPO update on the SDXL architecture, per memory option, at batch 1 (not in CI).

The UNet is SDXL base's architecture (the config below; 2,567,463,684 parameters, checked), randomly initialised on
the GPU, so nothing is downloaded. One case per row, each in a fresh process: make it the trained UNet and build its
reference and optimizer as the trainer does (`trainable_unet`, `build_optimizer`), then three updates of the trainer's own
`micro_batch_loss` (reference samples with `sample_num_steps`, the reference forward, the policy forward and
backward), clipping and the optimizer step, under bf16 autocast as `train_mixed_precision: bf16` runs them. The
peak is `torch.cuda.max_memory_allocated` over those updates (the optimizer's states exist from the first step).
Not counted: the frozen text encoders and VAE (precomputed latents and prompt embeddings stand in for them; about
1.6 GB more in bf16 unless `train_offload` keeps them in CPU memory).

    .venv/bin/python scripts/sdxl_memory.py                # on a CUDA GPU: results/memory/sdxl_<gpu>.{json,md}
    .venv/bin/python scripts/sdxl_memory.py --tiny --out D  # the same code on the tiny SDXL-like UNet, on the CPU
"""
import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

SDXL_UNET = dict(  # stabilityai/stable-diffusion-xl-base-1.0, unet/config.json (the architecture keys)
    act_fn="silu", addition_embed_type="text_time", addition_embed_type_num_heads=64, addition_time_embed_dim=256,
    attention_head_dim=[5, 10, 20], block_out_channels=[320, 640, 1280], cross_attention_dim=2048,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"], in_channels=4,
    layers_per_block=2, mid_block_type="UNetMidBlock2DCrossAttn", norm_num_groups=32, out_channels=4,
    projection_class_embeddings_input_dim=2816, sample_size=128, transformer_layers_per_block=[1, 2, 10],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"], use_linear_projection=True)
SDXL_PARAMS = 2_567_463_684
POOLED = 1280      # text_encoder_2's projection; 2816 = 1280 + 6 * 256
LORA = ["train_lora_rank=64", "train_lora_alpha=64"]
# name: config overrides (each case is SePPO at batch 1; the rest at the defaults)
CASES = {
    "full, AdamW": ["train_optimizer=adamw"],
    "full, AdamW, gradient checkpointing": ["train_optimizer=adamw", "train_gradient_checkpointing=true"],
    "full, Adafactor, gradient checkpointing": ["train_optimizer=adafactor", "train_gradient_checkpointing=true"],
    "full, 8-bit AdamW, gradient checkpointing": ["train_optimizer=adamw8bit", "train_gradient_checkpointing=true"],
    "full, AdamW, gradient checkpointing, offload": ["train_optimizer=adamw", "train_gradient_checkpointing=true",
                                                     "train_offload=true"],
    "LoRA r64, AdamW": LORA,
    "LoRA r64, AdamW, gradient checkpointing": LORA + ["train_gradient_checkpointing=true"],
}
UPDATES = 3


def build_unet(tiny:bool, device):
    from diffusers import UNet2DConditionModel
    if tiny:
        from seppo.core.models import tiny_xl_components
        return tiny_xl_components(0).unet.to(device)
    with torch.device(device): unet = UNet2DConditionModel(**SDXL_UNET)
    n = sum(p.numel() for p in unet.parameters())
    if n != SDXL_PARAMS: raise AssertionError(f"the SDXL UNet config gives {n:,} parameters, expected {SDXL_PARAMS:,}")
    return unet


def run_case(name:str, tiny:bool)->dict:
    "One case in this process: the peak memory of UPDATES SePPO updates."
    from diffusers import DDIMScheduler, DDPMScheduler
    from seppo.core.config import load_config
    from seppo.core.data import size_ids
    from seppo.core.trainer import Step, build_optimizer, micro_batch_loss, trainable_unet
    cuda = torch.cuda.is_available() and not tiny
    device = torch.device("cuda" if cuda else "cpu")
    precision = "bf16" if cuda else "no"
    cfg = load_config(overrides=CASES[name] + ["train_method=seppo", "train_batch_size=1", "sample_num_steps=2"],
                      train_mixed_precision=precision)
    torch.manual_seed(0)
    unet = build_unet(tiny, device)
    ref = trainable_unet(unet, cfg, device)
    params = [p for p in unet.parameters() if p.requires_grad]
    row = {"case": name, "trainable_params": sum(p.numel() for p in params),
           "params": sum(p.numel() for p in unet.parameters()), "device": str(device)}
    try: optimizer = build_optimizer(params, cfg, device)
    except (ValueError, ImportError) as e: return row | {"error": str(e)}
    side, text, pooled = unet.config.sample_size, unet.config.cross_attention_dim, (32 if tiny else POOLED)
    res = side * 8
    row["resolution"] = res
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                              num_train_timesteps=1000)
    time_ids = size_ids((res, res), (0, 0), (res, res))[None].to(device)
    step = Step(cfg, scheduler, DDIMScheduler.from_config(scheduler.config),
                negative_embeds=torch.zeros(1, 77, text, device=device), ref_unet=ref,
                negative_pooled=torch.zeros(1, pooled, device=device), time_ids=time_ids,
                offload_to=device if cfg["train_offload"] else None)
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 4, side, side, generator=g).to(device)
    prompt = torch.randn(1, 77, text, generator=g).to(device)
    added = {"text_embeds": torch.randn(1, pooled, generator=g).to(device), "time_ids": time_ids}
    if cuda: torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    losses, times = [], []
    for update in range(UPDATES):
        t0 = time.perf_counter()
        step.update, step.positions = update, (0,)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss, _ = micro_batch_loss(unet, (latents,), prompt, step, added=added)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg["train_max_grad_norm"])
        optimizer.step(); optimizer.zero_grad(set_to_none=True)
        if cuda: torch.cuda.synchronize()
        times.append(time.perf_counter() - t0); losses.append(loss.item())
    row |= {"losses": losses, "s_per_update": sorted(times)[len(times) // 2]}
    if cuda: row |= {"peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30,
                     "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30,
                     "gpu": torch.cuda.get_device_name(0)}
    return row


def table(rows:list[dict])->str:
    out = ["| case | trainable parameters | peak allocated (GiB) | peak reserved (GiB) | s / update |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        n = "?" if r["trainable_params"] is None else f"{r['trainable_params']:,}"
        if "error" in r: out.append(f"| {r['case']} | {n} | {r['error']} | | |"); continue
        alloc, reserved = (f"{r[k]:.1f}" if k in r else "n/a (CPU)" for k in ("peak_allocated_gib", "peak_reserved_gib"))
        out.append(f"| {r['case']} | {n} | {alloc} | {reserved} | {r['s_per_update']:.2f} |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="the tiny SDXL-like UNet on the CPU (checks the code, measures nothing)")
    ap.add_argument("--out", default="results/memory")
    ap.add_argument("--cases", nargs="*", default=list(CASES), help="a subset of the case names")
    ap.add_argument("--case", help=argparse.SUPPRESS)  # one case, run in this process (the parent starts these)
    args = ap.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.tiny))); return
    unknown = [c for c in args.cases if c not in CASES]
    if unknown: sys.exit(f"unknown case(s) {unknown}; the cases are {list(CASES)}")
    if not args.tiny and not torch.cuda.is_available(): sys.exit("no CUDA GPU: this measures GPU memory (--tiny checks the code on the CPU)")
    rows = []
    for name in args.cases:
        cmd = [sys.executable, __file__, "--case", name] + (["--tiny"] if args.tiny else [])
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            tail = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit code {r.returncode}"
            rows.append({"case": name, "trainable_params": None, "error": "failed: " + tail})
        else: rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    gpu = next((r["gpu"] for r in rows if "gpu" in r), "cpu-tiny")
    out = Path(args.out); out.mkdir(parents=True, exist_ok=True)
    stem = out / ("sdxl_" + re.sub(r"[^a-z0-9]+", "_", gpu.lower()).strip("_"))
    res = next((r["resolution"] for r in rows if "resolution" in r), None)
    meta = {"gpu": gpu, "torch": torch.__version__, "batch": 1, "resolution": res,
            "updates": UPDATES, "command": " ".join(["scripts/sdxl_memory.py", *sys.argv[1:]])}
    tmp = stem.with_suffix(".json.tmp"); tmp.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1)); tmp.replace(stem.with_suffix(".json"))
    arch = "a tiny SDXL-like UNet, float32" if args.tiny else "SDXL-architecture UNet (random init), bf16 autocast"
    md = (f"SePPO, {arch}, batch 1 at {res} px, on {gpu}; "
          f"text encoders and VAE not counted. `{meta['command']}`\n\n" + table(rows) + "\n")
    tmp = stem.with_suffix(".md.tmp"); tmp.write_text(md); tmp.replace(stem.with_suffix(".md"))
    print(md)


if __name__ == "__main__":
    main()
