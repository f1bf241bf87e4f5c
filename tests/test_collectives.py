"""Every collective happens on every process: no call that all processes must make (a barrier, a gather, a reduce,
accelerate's state API, a function that makes one) sits under a condition on the process's rank. A main-process-only
barrier hangs the other processes, the failure ddpo-pytorch#13 reports for `save_state`; here it fails a test."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COLLECTIVES = {"wait_for_everyone", "gather", "gather_object", "reduce", "broadcast_object_list", "broadcast",
               "all_reduce", "all_gather", "barrier", "get_state_dict", "save_state", "load_state"}
RANK_NAMES = {"main", "is_main_process", "is_local_main_process", "rank", "process_index", "local_process_index"}


def _name(call):
    f = call.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None


def _calls(nodes):
    for node in nodes:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Call) and _name(sub): yield sub


def _rank_dependent(test):
    return any(isinstance(n, ast.Name) and n.id in RANK_NAMES or isinstance(n, ast.Attribute) and n.attr in RANK_NAMES
               for n in ast.walk(test))


def collective_functions(tree)->set:
    "Names of the functions that make a collective, directly or through another such function (to a fixed point)."
    funcs = {n.name: n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    found = set()
    while True:
        more = {name for name, f in funcs.items() if name not in found
                and any(_name(c) in COLLECTIVES | found for c in _calls(f.body))}
        if not more: return found
        found |= more


def rank_only_collectives(source:str)->list[str]:
    "`line: name` of each collective call under a rank-dependent `if` (body or else branch) or conditional expression."
    tree = ast.parse(source)
    wanted = COLLECTIVES | collective_functions(tree)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.If, ast.IfExp)) and _rank_dependent(node.test):
            branches = [node.body, node.orelse] if isinstance(node, ast.IfExp) else node.body + node.orelse
            for c in _calls(branches):
                if _name(c) in wanted: out.append(f"{c.lineno}: {_name(c)}")
    return sorted(set(out))


@pytest.mark.parametrize("module", sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "seppo").rglob("*.py")
                                          if p.name != "_modidx.py"))
def test_no_collective_runs_on_one_process_only(module):
    assert rank_only_collectives((ROOT / module).read_text()) == []


BAD = {
    "a barrier on the main process": "if main:\n    accelerator.wait_for_everyone()\n",
    "a helper that gathers, called by rank 0": ("def snap(acc, m):\n    return acc.get_state_dict(m)\n"
                                                "if accelerator.is_main_process:\n    sd = snap(accelerator, unet)\n"),
    "a reduce in the else branch": "if not main:\n    pass\nelse:\n    x = accelerator.reduce(t)\n",
    "accelerate's save_state by rank": "if rank == 0:\n    accelerator.save_state(d)\n",
    "a conditional expression": "x = accelerator.gather(t) if accelerator.process_index == 0 else None\n",
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_the_check_catches_a_rank_only_collective(case):
    assert rank_only_collectives(BAD[case]), case


def test_the_check_passes_what_every_process_runs():
    ok = ("if accelerator.num_processes > 1: broadcast_object_list(box)\n"
          "if main:\n    save_final(accelerator, comps, export, cfg, out)\n"
          "box = [state if accelerator.is_main_process else None]\n")
    assert rank_only_collectives(ok) == []
