"""A static HTML site of the library notebooks, executed, without Quarto (make docs).

Each notebook of nbs/ (the library's, in reading order: their file names) is executed in nbs/ with the project's
kernel and rendered by nbconvert to build/docs/<name>.html; build/docs/index.html links them in that order with
each one's title and summary (its first heading and `>` line). A notebook that fails to execute stops the build,
naming it.    .venv/bin/python scripts/docs.py [--out build/docs] [--no-execute] [NOTEBOOK ...]
"""
import argparse
import configparser
import html
import json
import sys
import time
from pathlib import Path

import nbformat
from nbconvert import HTMLExporter
from nbconvert.preprocessors import ExecutePreprocessor

ROOT = Path(__file__).resolve().parents[1]


def skip_unexecuted(nb)->int:
    "Tag the cells nbdev does not execute (`#| eval: false`, `#| slow`, `#| gpu`) for nbclient to skip; how many."
    n = 0
    for c in nb.cells:
        directives = {line.replace(" ", "") for line in c.source.splitlines() if line.startswith("#|")}
        if c.cell_type == "code" and directives & {"#|eval:false", "#|slow", "#|gpu"}:
            c.metadata.setdefault("tags", []).append("skip-execution")
            n += 1
    return n


def title_and_summary(nb)->tuple[str, str]:
    first = next((c.source for c in nb.cells if c.cell_type == "markdown"), "")
    lines = first.splitlines()
    title = next((line.lstrip("# ").strip() for line in lines if line.startswith("#")), "")
    summary = next((line.lstrip("> ").strip() for line in lines if line.startswith(">")), "")
    return title, summary


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="*")
    ap.add_argument("--out", default=str(ROOT / "build" / "docs"))
    ap.add_argument("--no-execute", action="store_true", help="render the notebooks as committed (no outputs)")
    ap.add_argument("--timeout", type=int, default=900)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [Path(p).resolve() for p in a.notebooks] or sorted((ROOT / "nbs").glob("*.ipynb"))
    paths = sorted(paths, key=lambda p: (p.stem != "index", p.name))     # the index first, then in file order
    exporter, rows = HTMLExporter(template_name="lab"), []
    for p in paths:
        nb = nbformat.read(p, as_version=4)
        t0 = time.perf_counter()
        if not a.no_execute:
            skip_unexecuted(nb)
            try: ExecutePreprocessor(timeout=a.timeout, kernel_name="python3").preprocess(nb, {"metadata": {"path": str(p.parent)}})
            except Exception as e: sys.exit(f"docs: {p.relative_to(ROOT)} failed to execute: {type(e).__name__}: {str(e)[-2000:]}")
        body, _ = exporter.from_notebook_node(nb)
        name = "notebook-index.html" if p.stem == "index" else f"{p.stem}.html"
        (out / name).write_text(body, encoding="utf-8")
        title, summary = title_and_summary(nb)
        rows.append((name, p.name, title or p.stem, summary))
        print(f"docs: {p.name} -> {name} ({time.perf_counter() - t0:.0f} s)", flush=True)
    items = "\n".join(f'<li><a href="{html.escape(n)}">{html.escape(t)}</a> <code>{html.escape(f)}</code>'
                      f'{" — " + html.escape(s) if s else ""}</li>' for n, f, t, s in rows)
    ini = configparser.ConfigParser(delimiters=["="])
    ini.read(ROOT / "settings.ini")
    settings = ini["DEFAULT"]
    (out / "index.html").write_text(f"""<!doctype html><html><head><meta charset="utf-8"><title>seppo</title>
<style>body{{font-family:sans-serif;max-width:60rem;margin:2rem auto;line-height:1.5}}code{{color:#555}}</style></head>
<body><h1>seppo {html.escape(settings.get('version', ''))}</h1><p>{html.escape(settings.get('description', ''))}</p>
<p>The library's notebooks, executed, in reading order.</p><ol>
{items}
</ol></body></html>
""", encoding="utf-8")
    (out / "pages.json").write_text(json.dumps([{"html": n, "notebook": f, "title": t} for n, f, t, _ in rows], indent=1) + "\n")
    print(f"docs: {len(rows)} pages and index.html in {out}")


if __name__ == "__main__":
    main()
