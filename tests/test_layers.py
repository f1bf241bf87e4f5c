"The package's layers: each may import only the layers below it (utils < core < eval < world < experiments < cli)."
import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "seppo"
RANK = {"utils": 0, "_compat": 0, "core": 1, "eval": 2, "world": 3, "experiments": 4, "cli": 5}

def imported_layers(source:str, module:str)->set:
    "Layers (`seppo.<layer>`) that a module's source imports, absolute or relative, at any depth of the code."
    package = module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        names = []
        if isinstance(node, ast.Import): names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names = [base] + ([f"{base}.{a.name}" for a in node.names] if base == "seppo" else [])
        found |= {n.split(".")[1] for n in names if n.startswith("seppo.") and n.split(".")[1] in RANK}
    return found

def violations(files:dict)->list:
    "(module, imported layer) pairs where a module imports a layer above its own."
    out = []
    for module, source in files.items():
        own = module.split(".")[1]
        out += [(module, layer) for layer in sorted(imported_layers(source, module)) if RANK[layer] > RANK[own]]
    return out

def modules()->dict:
    files = {}
    for f in sorted(PKG.rglob("*.py")):
        rel = f.relative_to(PKG.parent).with_suffix("")
        name = ".".join(rel.parts)                                       # a package's own file stays seppo.x.__init__
        if name.count(".") >= 1 and name.split(".")[1] in RANK: files[name] = f.read_text()
    return files

def test_no_layer_imports_a_layer_above_it():
    files = modules()
    assert {m.split(".")[1] for m in files} >= {"core", "eval", "world", "experiments", "cli", "utils"}
    assert violations(files) == []

@pytest.mark.parametrize("module, source, layer", [
    ("seppo.core.trainer", "from ..world.base import resolve_world", "world"),                 # relative
    ("seppo.core.trainer", "def f():\n    import seppo.experiments.reproduce", "experiments"),  # lazy, absolute
    ("seppo.core.data", "from seppo.eval import scorers", "eval"),
    ("seppo.world.base", "from ..experiments.reproduce import load_profile", "experiments"),
    ("seppo.eval.evaluate", "from seppo.world.scene import render", "world")])
def test_the_check_catches_an_upward_import(module, source, layer):
    assert violations({module: source}) == [(module, layer)]

def test_downward_imports_pass():
    assert violations({"seppo.world.base": "from ..core.models import Components\nfrom ..utils import atomic_write",
                       "seppo.experiments.claims": "from .reproduce import collect\nfrom ..world.scene import render"}) == []


def test_the_module_table_lists_every_notebook():
    "CONTRIBUTING.md's table names each library notebook once, with the module it exports and that module's layer."
    import json
    import re
    root = PKG.parent
    rows = re.findall(r"^\| (\S+) \| `(\w+)` \| `(seppo[\w.]*)` \|", (root / "CONTRIBUTING.md").read_text(), re.M)
    found = {}
    for nb in sorted((root / "nbs").glob("[0-9]*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        exp = next(ln for c in cells for ln in "".join(c["source"]).splitlines() if ln.startswith("#| default_exp"))
        found[nb.stem] = "seppo." + exp.split()[-1]
    assert {n: m for _, n, m in rows} == found
    for layer, _, module in rows:
        assert layer == "–" or module.split(".")[1] == layer, (layer, module)


def test_nbdev_cannot_overwrite_the_readme():
    "settings.ini's readme_nb names no notebook, so nbdev_readme cannot replace the generated README.md."
    from configparser import ConfigParser
    cfg = ConfigParser(delimiters=["="])
    cfg.read(PKG.parent / "settings.ini")
    readme_nb = cfg["DEFAULT"]["readme_nb"]
    assert readme_nb and not (PKG.parent / "nbs" / readme_nb).exists()
