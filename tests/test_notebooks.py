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
