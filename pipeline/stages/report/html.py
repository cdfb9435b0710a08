"""The report as one self-contained HTML page (plots embedded)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from ...engine.memory import memory_markdown, memory_rows
from .fit_section import fit_markdown
from .markdown import cells, explain_markdown, headline, latency_markdown, notes
from .rows import columns, latency_size


def markdown_html(text: str) -> str:
    """The little markdown the summary and latency tables use (## headings, | tables |, - lists, paragraphs)."""
    out, table = [], []

    def flush() -> None:
        if table:
            rows = [
                [c.strip() for c in ln.strip().strip("|").split("|")]
                for ln in table
                if not set(ln.replace("|", "").strip()) <= {"-", ":"}
            ]
            head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
            body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
            out.append(f"<table><tr>{head}</tr>{body}</table>")
            table.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("#"):
            out.append(f"<h2>{html.escape(line.lstrip('#').strip())}</h2>")
        elif line.startswith("- "):
            out.append(f"<li>{html.escape(line[2:])}</li>")
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    flush()
    return "\n".join(out)


def img(path: Path, alt: str) -> str:
    return f'<img alt="{alt}" src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}">'


def to_html(
    rows: list[dict],
    meta: dict,
    png: Path,
    layers: Path,
    latency: Path | None = None,
    memory: Path | None = None,
    fit: Path | None = None,
) -> str:
    reference = meta.get("reference")
    mem = memory_rows(rows, meta.get("latency_tables", []))
    explained = ""
    if meta.get("explain"):
        explained = markdown_html(explain_markdown(meta["explain"])) + img(layers, "per-layer SNR")
    size = latency_size(rows)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns(rows))
    body = "".join(
        f'<tr class="{"ok" if r["status"] == "pass" else "bad"}">'
        + "".join(f"<td>{html.escape(c)}</td>" for c in cells(r, reference, size))
        + "</tr>"
        for r in rows
    )
    notes_html = "".join(
        f"<p>{html.escape(n)}</p>" for n in [*notes(rows, reference), meta.get("converters") or ""] if n
    )
    title = f"resnet-edge report: {html.escape(meta['run'])}"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;
padding:3px 8px;text-align:right}}td:first-child{{text-align:left}}tr.bad{{background:#fdd}}
table{{margin-bottom:1em}}</style></head><body>
<h1>{title}</h1>
<p><b>{html.escape(headline(rows, reference))}</b></p>
<p>Host: {html.escape(meta["host"]["cpu"])}, {meta["host"]["cores"]} cores. MiB = 2<sup>20</sup> bytes; latency =
median ms per image, batch 1, after warm-up.</p>
{img(png, "accuracy vs size")}
<table><tr>{head}</tr>{body}</table>{notes_html}
{"".join(markdown_html(latency_markdown(t)) for t in meta.get("latency_tables", []))}
{img(latency, "accuracy vs latency") if latency and latency_size(rows) else ""}
{markdown_html(memory_markdown(mem)) + img(memory, "memory") if memory and mem else ""}
{markdown_html(fit_markdown(meta["fit"])) + img(fit, "fit search") if fit and meta.get("fit") else ""}
{explained}
{"<h2>Stages</h2>" + markdown_html(chr(10).join(meta["stages"])) if meta.get("stages") else ""}
<h2>Architecture</h2>{markdown_html(meta.get("architecture", ""))}
<h2>Versions</h2><p>{html.escape(", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items()))}</p>
</body></html>
"""
