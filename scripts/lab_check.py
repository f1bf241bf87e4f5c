"""Run notebooks in JupyterLab in a real browser (make lab-check; not in CI).

Starts `jupyter lab` headless on a free local port with a token, opens copies of the notebooks (under build/lab-check,
so the committed ones stay as they are) in headless Chromium from the system's packages (Playwright for Python with
`executable_path`, no browser download), fails if JupyterLab asks which kernel to use, runs every cell through the
Run menu, waits for the kernel to go idle, saves, and fails if a cell did not run or shows an error output.
A screenshot of each notebook goes to build/lab-check/<name>.png.

    .venv/bin/python scripts/lab_check.py [nbs/index.ipynb nbs/00_losses_aaf.ipynb] [--chromium /usr/bin/chromium]
"""
import argparse
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "build" / "lab-check"


def free_port()->int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_server(url:str, timeout:float=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200: return
        except OSError: time.sleep(0.5)
    raise TimeoutError(f"jupyter lab did not answer at {url} within {timeout:.0f} s")


def check_notebook(page, base:str, token:str, rel:str, timeout:float)->dict:
    "Open (in a workspace of its own, so no earlier tab comes back), run all, save; the result of one notebook."
    page.goto(f"{base}/lab/workspaces/{Path(rel).stem}/tree/{rel}?reset&token={token}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.wait_for_timeout(3000)
    dialog = page.locator(".jp-Dialog")
    if dialog.count() and "Select Kernel" in dialog.first.inner_text():
        page.keyboard.press("Escape")
        return {"notebook": rel, "ok": False, "problem": "JupyterLab asked to select a kernel (no kernelspec?)"}
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", state="attached", timeout=120_000)
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    t0 = time.time()
    page.wait_for_timeout(2000)
    while time.time() - t0 < timeout:
        busy = page.locator(".jp-Notebook-ExecutionIndicator[data-status='busy']").count()
        running = [t for t in page.locator(".jp-InputPrompt").all_inner_texts() if "*" in t]
        if not busy and not running: break
        page.wait_for_timeout(1000)
    else:
        return {"notebook": rel, "ok": False, "problem": f"still running after {timeout:.0f} s"}
    seconds = time.time() - t0
    page.keyboard.press("Control+s")
    page.wait_for_timeout(2000)
    shot = OUT / (Path(rel).stem + ".png")
    page.screenshot(path=str(shot), full_page=False)
    nb = json.loads((ROOT / rel).read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    errors = [o.get("ename", "?") for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    not_run = sum(c.get("execution_count") is None for c in code if "".join(c["source"]).strip())
    return {"notebook": rel, "ok": not errors and not not_run, "code_cells": len(code), "errors": errors,
            "not_run": not_run, "seconds": round(seconds, 1), "screenshot": str(shot.relative_to(ROOT)),
            "kernel": nb["metadata"].get("kernelspec", {}).get("name")}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="*", default=["nbs/index.ipynb", "nbs/00_losses_aaf.ipynb"])
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    ap.add_argument("--timeout", type=float, default=600)
    a = ap.parse_args()
    from playwright.sync_api import sync_playwright
    if not Path(a.chromium).is_file():
        sys.exit(f"no Chromium at {a.chromium}: install Debian's (apt-get install chromium) or pass --chromium PATH")
    if OUT.exists(): shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    copies = []
    for nb in a.notebooks:
        dest = OUT / Path(nb).name
        shutil.copy(ROOT / nb, dest)
        copies.append(dest.relative_to(ROOT).as_posix())
    port, token = free_port(), secrets.token_hex(16)
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    cmd = [str(Path(sys.executable).parent / "jupyter"), "lab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={ROOT}"]
    if os.geteuid() == 0: cmd.append("--allow-root")                 # containers run as root; 127.0.0.1 and a token only
    lab = subprocess.Popen(cmd, env=env, stdout=open(OUT / "jupyter.log", "w"), stderr=subprocess.STDOUT)
    results = []
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_server(f"{base}/api/status?token={token}")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=a.chromium, headless=True, args=["--no-sandbox"])
            for rel in copies:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                results.append(check_notebook(page, base, token, rel, a.timeout))
                page.close()
                print(json.dumps(results[-1]), flush=True)
            browser.close()
    finally:
        lab.terminate()
        lab.wait(30)
    (OUT / "result.json").write_text(json.dumps(results, indent=1) + "\n")
    return 0 if results and all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
