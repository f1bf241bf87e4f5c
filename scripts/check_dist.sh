#!/usr/bin/env bash
# The wheel on its own (make check-dist): build sdist and wheel, check the wheel's files and metadata, install it into
# a fresh venv with torch (the CPU wheel first) and the wheel's runtime dependencies only (no dev extras), and run
# `seppo demo`, `seppo config --defaults`, `seppo train` on a tiny config written here, and an import from outside
# the repo.     bash scripts/check_dist.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$ROOT/.venv/bin/python}
TORCH=${TORCH:-torch==$("$PY" -c 'import importlib.metadata as m; print(m.version("torch").split("+")[0])')}
cd "$ROOT"
rm -rf dist && "$PY" -m build --no-isolation --outdir dist . > build-dist.log 2>&1 || { tail -30 build-dist.log; exit 1; }
rm -f build-dist.log
WHEEL=$(ls dist/seppo-*.whl)
"$PY" - "$WHEEL" <<'PYEOF'
import sys, zipfile, email
names = zipfile.ZipFile(sys.argv[1]).namelist()
meta = email.message_from_string(zipfile.ZipFile(sys.argv[1]).read(next(n for n in names if n.endswith("METADATA"))).decode())
assert "seppo/assets/bpe_simple_vocab_16e6.txt.gz" in names and "seppo/assets/LICENSE-CLIP-BPE.txt" in names, "vendored assets missing"
bad = [n for n in names if n.split("/")[0] in ("tests", "nbs", "results", "figures", "configs", "scripts") or n.endswith(".ipynb")]
assert not bad, f"the wheel holds files that are not the library: {bad[:5]}"
assert any(n.endswith("licenses/LICENSE") or n.endswith("/LICENSE") for n in names), "no LICENSE in the wheel"
extras = set(meta.get_all("Provides-Extra"))
assert {"dev", "tensorboard", "wandb"} <= extras, extras
assert meta["Name"] == "seppo" and meta["Version"] and "Apache" in meta["License"], (meta["Name"], meta["Version"], meta["License"])
entry = zipfile.ZipFile(sys.argv[1]).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
assert "seppo = seppo.cli:main" in entry and "[seppo.plugins]" in entry, entry
print(f"wheel {sys.argv[1]}: {len(names)} files, version {meta['Version']}, extras {sorted(extras)}")
PYEOF
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
python3 -m venv "$WORK/venv"
V="$WORK/venv/bin"
"$V/python" -m pip install -q "$TORCH"
"$V/python" -m pip install -q "$ROOT/$WHEEL"
cd "$WORK"
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
"$V/seppo" demo | tail -3
"$V/seppo" config --defaults > defaults.yaml && grep -q "^train_method: seppo" defaults.yaml
printf 'model_path: tiny\ndata_source: toy\ntrain_method: seppo\ntrain_max_updates: 3\ntrain_batch_size: 2\ndata_toy_size: 8\nsample_num_steps: 2\ntrain_checkpoint_every: 0\ntrain_cpu: true\n' > tiny.yaml
"$V/seppo" train --config tiny.yaml --output-dir run --no-progress > train.log 2>&1 || { tail -20 train.log; exit 1; }
test -f run/final/model_index.json && test -f run/final/README.md && test "$(wc -l < run/log.jsonl)" -eq 3
"$V/python" -c "import seppo, seppo.core.trainer, seppo.world; assert '$ROOT' not in seppo.__file__, seppo.__file__; print('import from', seppo.__file__)"
"$V/python" -c "import importlib.util as u; assert not any(u.find_spec(m) for m in ('nbdev', 'pytest', 'papermill')), 'a dev extra was installed'"
echo "check-dist: OK ($WHEEL in a fresh venv: demo, config, train, import)"
