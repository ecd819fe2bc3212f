"""The training report written next to a model bundle: report.png (AUC, GAUC and loss per
epoch) and report.md (metrics at the best epoch, the model comparison, per-epoch tables)."""

from __future__ import annotations

import io
import math
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

REPORT_IMAGE = "report.png"
REPORT_SUMMARY = "report.md"

# Fixed so the two models look the same in every report (and tests can find them by colour).
COLOURS = {"DIN": "#d62728", "BaseModel": "#1f77b4"}
# Other labels take these in order; tab10 without the red and blue reserved above.
FALLBACK_COLOURS = ("#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")

History = list[dict]


def colour_of(label: str, index: int) -> str:
    return COLOURS.get(label, FALLBACK_COLOURS[index % len(FALLBACK_COLOURS)])


def fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4f}"


def best_row(history: History, epoch: int) -> dict:
    for row in history:
        if row["epoch"] == epoch:
            return row
    raise ValueError(f"best epoch {epoch} is not in the history")


Series = tuple[str, str, str | None]  # (legend suffix, history key, metric or None)
# Per panel: title, y label, the solid series (best epoch circled on it), the dashed series.
Panel = tuple[str, str, Series, Series]
PANELS: tuple[Panel, ...] = (
    ("AUC per epoch", "AUC", ("test", "test", "auc"), ("valid", "valid", "auc")),
    ("GAUC per epoch", "GAUC", ("test", "test", "gauc"), ("valid", "valid", "gauc")),
    ("Loss per epoch", "loss", ("train", "train_loss", None), ("valid", "valid", "logloss")),
)


def series_values(history: History, series: Series) -> list[float]:
    _, key, metric = series
    return [row[key] if metric is None else row[key][metric] for row in history]


def plot_panel(ax: Axes, runs: dict[str, History], best: dict[str, int], panel: Panel) -> None:
    """One colour per model: solid with markers, dashed, and a hollow circle at the best epoch."""
    title, ylabel, solid, dashed = panel
    for index, (label, history) in enumerate(runs.items()):
        colour, epochs = colour_of(label, index), [row["epoch"] for row in history]
        ys = series_values(history, solid)
        ax.plot(epochs, ys, "-o", color=colour, ms=4, label=f"{label} {solid[0]}")
        dashed_ys = series_values(history, dashed)
        ax.plot(epochs, dashed_ys, "--", color=colour, label=f"{label} {dashed[0]}")
        kept = series_values([best_row(history, best[label])], solid)
        ax.plot([best[label]], kept, "o", ms=11, mfc="none", mec=colour, mew=1.5)
    ax.set(title=title, xlabel="epoch", ylabel=ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")


def render_png(runs: dict[str, History], best: dict[str, int], title: str) -> bytes:
    """Three panels, 13x4 inches at 100 dpi (1300x400 px); no pyplot, so no global state."""
    fig = Figure(figsize=(13, 4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    for ax, panel in zip(fig.subplots(1, len(PANELS)), PANELS, strict=True):
        plot_panel(ax, runs, best, panel)
    fig.suptitle(title)
    buffer = io.BytesIO()
    # No Software entry: the bytes depend on the data, not on the matplotlib version.
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return buffer.getvalue()


def summary_table(runs: dict[str, History], best: dict[str, int]) -> list[str]:
    lines = [
        "| model | best epoch | test AUC | test GAUC | test logloss | valid GAUC |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, history in runs.items():
        row = best_row(history, best[label])
        test, valid = row["test"], row["valid"]
        cells = [fmt(test["auc"]), fmt(test["gauc"]), fmt(test["logloss"]), fmt(valid["gauc"])]
        lines.append(f"| {label} | {best[label]} | " + " | ".join(cells) + " |")
    return lines


def comparison_lines(runs: dict[str, History], best: dict[str, int]) -> list[str]:
    """The first model against each other one, on test GAUC at their best epochs."""
    gaucs = {label: best_row(h, best[label])["test"]["gauc"] for label, h in runs.items()}
    first, *others = gaucs
    lines = []
    for other in others:
        diff = gaucs[first] - gaucs[other]
        if math.isnan(diff):
            lines.append(f"{first} vs {other} on test GAUC: n/a")
        else:
            verb = "beats" if diff >= 0 else "trails"
            lines.append(f"{first} {verb} {other} on test GAUC by {diff:+.4f}")
    return lines


def epoch_table(label: str, history: History) -> list[str]:
    lines = [
        f"## {label} per epoch",
        "",
        "| epoch | train loss | valid AUC | valid GAUC | valid logloss "
        "| test AUC | test GAUC | test logloss |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in history:
        metrics = [row[split][m] for split in ("valid", "test") for m in ("auc", "gauc", "logloss")]
        cells = " | ".join(fmt(v) for v in [row["train_loss"], *metrics])
        lines.append(f"| {row['epoch']} | {cells} |")
    return lines


def render_markdown(runs: dict[str, History], best: dict[str, int], title: str) -> str:
    lines = [f"# Training report: {title}", "", *summary_table(runs, best), ""]
    if len(runs) > 1:
        lines += [*comparison_lines(runs, best), ""]
    for label, history in runs.items():
        lines += [*epoch_table(label, history), ""]
    lines.append(f"![training curves]({REPORT_IMAGE})")
    return "\n".join(lines) + "\n"


def make_report(
    runs: dict[str, list[dict]], best_epochs: dict[str, int], title: str = "MovieLens-100K"
) -> dict[str, bytes]:
    """Plot and summarise the runs: {report.png: bytes, report.md: bytes}."""
    return {
        REPORT_IMAGE: render_png(runs, best_epochs, title),
        REPORT_SUMMARY: render_markdown(runs, best_epochs, title).encode(),
    }


def write_report(
    folder: Path,
    runs: dict[str, list[dict]],
    best_epochs: dict[str, int],
    title: str = "MovieLens-100K",
) -> dict[str, bytes]:
    """make_report, and write its files into folder. Returns the same bytes as the files."""
    files = make_report(runs, best_epochs, title)
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files
