"""Run every library notebook with nbdev's runner, one pytest item per notebook."""
from configparser import ConfigParser
from pathlib import Path

import pytest
from nbdev.test import test_nb as run_notebook

ROOT = Path(__file__).resolve().parents[1]
NBS = sorted((ROOT / "nbs").glob("[0-9]*.ipynb")) + [ROOT / "nbs" / "index.ipynb"]
_cfg = ConfigParser(delimiters=["="])
_cfg.read(ROOT / "settings.ini")
SKIP_FLAGS = _cfg["DEFAULT"].get("tst_flags", "").split("|")


def test_found_notebooks():
    assert NBS, "no library notebooks found under nbs/"


@pytest.mark.parametrize("nb", NBS, ids=lambda p: p.stem)
def test_notebook(nb):
    ok, _ = run_notebook(nb, skip_flags=SKIP_FLAGS, showerr=True, basepath=ROOT)
    assert ok, f"{nb.name} failed (traceback above)"


def test_base_yaml_is_the_documented_defaults():
    from seppo.core.config import defaults_yaml
    assert (ROOT / "configs" / "defaults.yaml").read_text() == defaults_yaml(), \
        "configs/defaults.yaml is stale: regenerate it with `seppo config --defaults > configs/defaults.yaml`"


ALL_NBS = sorted((ROOT / "nbs").rglob("*.ipynb"))


@pytest.mark.parametrize("nb", ALL_NBS, ids=lambda p: p.relative_to(ROOT / "nbs").as_posix())
def test_every_notebook_opens_in_the_project_kernel(nb):
    "A kernelspec (python3, the venv's ipykernel) so JupyterLab opens the notebook without a 'Select Kernel' dialog."
    import json
    assert json.loads(nb.read_text())["metadata"].get("kernelspec", {}).get("name") == "python3", nb


def test_nbdev_clean_keeps_the_kernelspec(tmp_path):
    import json
    import shutil
    import subprocess
    import sys
    nb = tmp_path / "k.ipynb"
    shutil.copy(ROOT / "nbs" / "index.ipynb", nb)
    data = json.loads(nb.read_text())
    data["metadata"]["language_info"] = {"name": "python", "version": "3.11.7"}   # what nbdev_clean strips
    nb.write_text(json.dumps(data))
    subprocess.run([str(Path(sys.executable).parent / "nbdev_clean"), "--fname", str(nb)], cwd=ROOT, check=True)
    meta = json.loads(nb.read_text())["metadata"]
    assert meta["kernelspec"]["name"] == "python3" and "language_info" not in meta, meta
