"""Output of a run: the JSON document, PNG plots and the summary table.

Everything a run measured goes into result.json (figures, encoded HDR histograms, counts, the
machine, the options), so plots and tables can be redrawn and runs compared later; the PNGs and
the table are views of it. Plots use matplotlib's Agg backend: no display is needed.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from . import hist

#: Where a run writes by default: ignored by git, so runs never show in `git status`. The
#: curated results bench/README.md cites live one level up, in bench/results/, committed.
RESULTS = Path(__file__).resolve().parent / "results" / "runs"


def new_run_dir(root: Path | None, scenario: str) -> Path:
    root = root or RESULTS
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = root / f"{stamp}-{scenario}"
    suffix = 1
    while path.exists():
        suffix += 1
        path = root / f"{stamp}-{scenario}-{suffix}"
    path.mkdir(parents=True)
    return path


def write_json(path: Path, doc: dict) -> None:
    path.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")


# ---------------------------------------------------------------- table
def table(headers: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A plain text table, numbers right-aligned."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        lines.append("  ".join(c.rjust(w) if n and _numeric(c) else c.ljust(w)
                               for c, w in zip(row, widths)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def kib(value: float | None) -> str:
    return "-" if value is None else f"{value / 1024:,.1f}"


def ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _numeric(cell: str) -> bool:
    return bool(cell) and (cell[0].isdigit() or cell[0] == "-" and len(cell) > 1) and \
        cell[-1] in "0123456789x%"


# ---------------------------------------------------------------- plots
def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def cdf_plot(path: Path, title: str, series: dict[str, str], xlabel: str = "latency (ms)") -> Path:
    """CDFs of encoded HDR histograms, one line per label, log latency axis; the y axis is
    stretched toward the tail (1 - p on a log scale) so p99 and p99.9 are readable."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for label, encoded in series.items():
        h = hist.merge([encoded])
        if not h.get_total_count():
            continue
        xs, ys = hist.cdf(h)
        tail = [max(1 - y, 1e-5) for y in ys]
        ax.step(xs, tail, where="post", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.invert_yaxis()
    ax.set_yticks([0.5, 0.1, 0.01, 0.001, 0.0001])
    ax.set_yticklabels(["p50", "p90", "p99", "p99.9", "p99.99"])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("percentile")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    return _save(plt, fig, path)


def lines_plot(path: Path, title: str, xlabel: str, ylabel: str,
               series: dict[str, tuple[Sequence[float], Sequence[float]]], *,
               logx: bool = False, logy: bool = False, diagonal: bool = False,
               markers: bool = True) -> Path:
    """One line per label through (x, y) points; `diagonal` draws y = x (offered = achieved)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    top = 0.0
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o" if markers else None, label=label)
        top = max([top, *xs, *ys])
    if diagonal and top:
        ax.plot([0, top], [0, top], linestyle=":", color="grey", label="achieved = offered")
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    return _save(plt, fig, path)


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
