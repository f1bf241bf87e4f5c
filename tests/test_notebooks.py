"""Run every library notebook with nbdev's runner, one pytest item per notebook."""
from configparser import ConfigParser
from pathlib import Path

import pytest
from nbdev.test import test_nb as run_notebook

ROOT = Path(__file__).resolve().parents[1]
NBS = sorted((ROOT / "nbs").glob("[0-9]*.ipynb"))
_cfg = ConfigParser(delimiters=["="])
_cfg.read(ROOT / "settings.ini")
SKIP_FLAGS = _cfg["DEFAULT"].get("tst_flags", "").split("|")


def test_found_notebooks():
    assert NBS, "no library notebooks found under nbs/"


@pytest.mark.parametrize("nb", NBS, ids=lambda p: p.stem)
def test_notebook(nb):
    ok, _ = run_notebook(nb, skip_flags=SKIP_FLAGS, showerr=True, basepath=ROOT)
    assert ok, f"{nb.name} failed (traceback above)"
