#!/usr/bin/env bash
# The sharded paths on one GPU (world size 1 is still the real FSDP / DeepSpeed code: wrapping, gathered snapshots,
# accelerate's state API): for each of configs/accelerate/fsdp.yaml and zero2.yaml, a tiny SePPO run of 6 updates,
# the same run killed right after its checkpoint at update 3 and resumed, and a bitwise comparison of the two final
# UNets. Needs a CUDA torch and accelerate in $PY's environment (and deepspeed for zero2; skipped without it).
# Under 8 minutes on one GPU.    bash scripts/gpu_sharded_check.sh [OUT]
set -u
PY=${PY:-.venv/bin/python}
SEPPO=$(dirname "$PY")/seppo
OUT=${1:-runs/gpu-sharded}
rm -rf "$OUT"; mkdir -p "$OUT"
export HF_HUB_OFFLINE=1
SETS=(--set train_cpu=false --set train_max_updates=6 --set train_checkpoint_every=3 --set train_checkpoints_keep=0
      --set ref_snapshot_every=2 --set data_toy_size=16 --set train_batch_size=4 --set sample_num_steps=2
      --set train_mixed_precision=no)
status=0
for kind in fsdp zero2; do
  if [ "$kind" = zero2 ] && ! "$PY" -c "import deepspeed" 2>/dev/null; then echo "$kind: SKIPPED (deepspeed not installed)"; continue; fi
  launch=("$PY" -m accelerate.commands.launch --config_file "configs/accelerate/$kind.yaml" --num_processes 1 "$SEPPO" train
          --config configs/examples/tiny-seppo.yaml --no-progress "${SETS[@]}")
  "${launch[@]}" --output-dir "$OUT/$kind-whole" > "$OUT/$kind-whole.log" 2>&1 || { echo "$kind: whole run FAILED"; tail -30 "$OUT/$kind-whole.log"; status=1; continue; }
  SEPPO_TEST_FAULT=after_checkpoint@3 PYTHONPATH=tests/faults "${launch[@]}" --output-dir "$OUT/$kind-cut" > "$OUT/$kind-cut.log" 2>&1
  "${launch[@]}" --output-dir "$OUT/$kind-cut" --resume > "$OUT/$kind-resume.log" 2>&1 || { echo "$kind: resume FAILED"; tail -30 "$OUT/$kind-resume.log"; status=1; continue; }
  "$PY" - "$OUT/$kind-whole" "$OUT/$kind-cut" "$kind" <<'PYEOF' || status=1
import json, sys, torch
from pathlib import Path
from safetensors.torch import load_file
a, b, kind = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
wa, wb = (load_file(p / "final/unet/diffusion_pytorch_model.safetensors") for p in (a, b))
same = wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
ck = a / "checkpoints/step-3"
state = json.loads((ck / "trainer_state.json").read_text())
print(f"{kind}: distributed_type {state['distributed_type']}, accelerate state {sorted(p.name for p in (ck / 'accelerate').iterdir())}, "
      f"pool {state['pool_size']}, resumed final weights {'bit for bit equal' if same else 'DIFFER'} "
      f"({torch.cuda.get_device_name(0)})")
sys.exit(0 if same and state["distributed_type"] in ("FSDP", "DEEPSPEED") else 1)
PYEOF
done
exit $status
