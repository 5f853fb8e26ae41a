"""Small PNG plots (matplotlib, Agg backend) for metadata and reports. Pure module."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


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
