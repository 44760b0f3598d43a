"""The report's front page: the headline tables and plots of a run in one HTML fragment.

Tables come as the HTML fragments that :meth:`masqclip.results.tables.Table.to_html` writes and are
inlined as they are; plots (PNG) are embedded as data URIs, so the fragment stands alone (the
Snakemake report includes it in its workflow description, where only text can go).
"""
from __future__ import annotations

import base64
import html
from pathlib import Path

# Captions of the plots a front page may show, by file-name prefix.
PLOT_CAPTIONS = {
    "base_novel_": "Distillation rounds: class-agnostic base/novel recall and base vs novel AP50 by round "
                   "and model variant.",
    "training_": "Training curves: total loss per iteration of every trained stage.",
    "clip_zero_shot": "The small CLIP's zero-shot crop accuracy.",
}


def plot_caption(path: str | Path) -> str:
    name = Path(path).name
    for prefix, caption in PLOT_CAPTIONS.items():
        if name.startswith(prefix):
            return f"{caption} ({name})"
    return name


def front_page(files: list[str | Path]) -> str:
    """One HTML fragment: each ``.html`` file inlined, each ``.png`` a captioned figure, in order."""
    parts = ['<div class="masqclip-front">']
    for f in map(Path, files):
        if f.suffix == ".html":
            parts.append(f.read_text(encoding="utf-8").replace('<meta charset="utf-8">\n', ""))
        elif f.suffix == ".png":
            data = base64.b64encode(f.read_bytes()).decode("ascii")
            caption = html.escape(plot_caption(f))
            parts.append(f'<figure style="margin:1em 0"><img src="data:image/png;base64,{data}" alt="{caption}" '
                         f'style="max-width:100%"><figcaption>{caption}</figcaption></figure>')
        else:
            raise ValueError(f"{f}: a front page holds .html tables and .png plots, not {f.suffix or 'this file'}")
    parts.append("</div>")
    return "\n".join(parts) + "\n"


def write_front_page(files: list[str | Path], output: str | Path) -> Path:
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(front_page(files), encoding="utf-8")
    return out
