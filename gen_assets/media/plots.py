"""Small PNG plots (matplotlib, Agg backend) for metadata and reports. Pure module."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def curves_png(history: Sequence[Mapping[str, float]], keys: Sequence[str], title: str) -> bytes:
    """One line per key over epochs; keys missing from the history are skipped."""
    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    for key in keys:
        points = [(row["epoch"] + 1, row[key]) for row in history if key in row]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, label=key)
    ax.set_xlabel("epoch")
    ax.set_title(title)
    if ax.lines:
        ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def trend_png(rows: Sequence[Mapping], keys: Sequence[str], title: str) -> bytes:
    """A metric trend over evaluations: one panel per key (their scales differ), one point per row
    (rows: {"measured_at": ..., "model_version": ..., key: value, ...}, oldest first); champion changes
    show as vertical lines."""
    keys = [k for k in keys if any(k in r for r in rows)] or list(keys[:1])
    fig, axes = plt.subplots(len(keys), 1, figsize=(6, 1.8 * len(keys) + 0.6), dpi=100, sharex=True, squeeze=False)
    xs = list(range(1, len(rows) + 1))
    changes = [i + 1 for i in range(1, len(rows)) if rows[i]["model_version"] != rows[i - 1]["model_version"]]
    for ax, key in zip(axes[:, 0], keys):
        points = [(x, r[key]) for x, r in zip(xs, rows) if r.get(key) is not None]
        if points:
            ax.plot(*zip(*points), marker="o", markersize=3)
        for x in changes:
            ax.axvline(x - 0.5, color="grey", linestyle=":", linewidth=1)
        ax.set_ylabel(key)
    axes[-1, 0].set_xlabel("evaluation (dotted line: new model)")
    axes[-1, 0].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0, 0].set_title(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
