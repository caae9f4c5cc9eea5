"""The figure style of every figure the package draws.

The layer-wise accuracy plot hook and the analysis figures both use it.
matplotlib is imported when a figure is made, so that the package does not
need it to train.
"""
import io
from typing import Tuple

from auglocal_det.fileio import atomic_write

__all__ = ['new_figure', 'save_figure']

#: Size (inches) and resolution of every figure the package draws.
FIGSIZE = (8, 4.5)
DPI = 110


def new_figure() -> Tuple[object, object]:
    """A matplotlib figure with one axes, on the Agg canvas.

    The object-oriented API: no global backend switch, safe in workers and
    hooks.

    Returns:
        tuple: ``(figure, axes)``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def save_figure(fig, path: str) -> None:
    """Lay out ``fig`` and write it to ``path`` as a PNG, atomically."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format='png')
    atomic_write(path, lambda f: f.write(buf.getvalue()))
