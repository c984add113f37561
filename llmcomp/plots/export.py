"""Writing a plotly figure to files: HTML always (plotly inline, so it opens offline), PNG only when the
optional static exporter (kaleido) is already installed; it is not a dependency."""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go


def write_figure(fig: go.Figure, folder: str | Path, stem: str) -> dict[str, Path]:
    """``<stem>.html`` and, where kaleido is importable, ``<stem>.png`` in ``folder``; file name -> path."""
    folder = Path(folder)
    files = {f"{stem}.html": folder / f"{stem}.html"}
    fig.write_html(files[f"{stem}.html"], include_plotlyjs=True)
    try:
        import kaleido  # noqa: F401

        fig.write_image(folder / f"{stem}.png")
        files[f"{stem}.png"] = folder / f"{stem}.png"
    except Exception:  # no exporter, or one that cannot start here (no browser for kaleido 1.x)
        pass
    return files
