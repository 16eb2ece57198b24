"""The course's figures as pure functions: arrays in, a matplotlib Figure (or an image) out.

No Lightning, no MLflow here. Figures are built on matplotlib's object API with the Agg
canvas, never pyplot: nothing global keeps them alive, so they need no ``plt.close`` and
draw the same in a headless training job.

Layouts are computed in inches from what the figure holds (tile count, title lines, the
measured width of the longest class name), not left to matplotlib's layout engines: those
draw every figure twice, and drawing is most of the time a run spends on its figures. So
ten digit classes and seventeen long flower names both get the room they need.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.ticker import MaxNLocator

from denselab.reporting.analysis import scale_per_tile

# Green positive, purple negative, white at zero: the course's weight images.
WEIGHT_CMAP = "PRGn"
TILE_INCHES = 1.4
MAX_TILES_PER_ROW = 8
TITLE_SIZE, LABEL_SIZE, TILE_TITLE_SIZE = 11, 9, 8
LINE_INCHES = 0.16  # one line of 8-9 pt text, with its leading
RGB_NOTE = (
    "RGB tiles: each unit's weights min-max scaled to [0, 1] on their own; "
    "colours compare within a tile only."
)


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)  # measures text and saves without pyplot
    return fig


def add_axes(fig: Figure, left: float, bottom: float, width: float, height: float) -> Axes:
    """An axes placed in inches from the figure's lower left corner."""
    fig_w, fig_h = fig.get_size_inches()
    return fig.add_axes((left / fig_w, bottom / fig_h, width / fig_w, height / fig_h))


def text_inches(fig: Figure, texts: Sequence[str], size: float) -> float:
    """Width in inches of the widest of ``texts`` at font ``size``."""
    renderer = fig.canvas.get_renderer()
    font = FontProperties(size=size)
    widths = [renderer.get_text_width_height_descent(t, font, ismath=False)[0] for t in texts]
    return max(widths, default=0.0) / fig.dpi


def put_title(fig: Figure, title: str) -> None:
    fig.suptitle(title, fontsize=TITLE_SIZE, y=1 - 0.1 / fig.get_size_inches()[1], va="top")


def is_rgb(images: np.ndarray) -> bool:
    """(N, H, W, 3) images are colour; (N, H, W) are grey."""
    return images.ndim == 4 and images.shape[-1] == 3


def grey(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 1) single-channel images as (N, H, W); others unchanged."""
    return images[..., 0] if images.ndim == 4 and images.shape[-1] == 1 else images


def grid_shape(n: int) -> tuple[int, int]:
    """(rows, columns) for ``n`` tiles: rows of at most eight, as even as they can be."""
    rows = max(1, math.ceil(n / MAX_TILES_PER_ROW))
    return rows, max(1, math.ceil(n / rows))


def square_grid(n: int) -> tuple[int, int]:
    """(rows, columns) for ``n`` tiles, as near a square as can be: MLflow's UI shows an
    image series in a square card, where a wide strip shrinks to a thin line."""
    cols = max(1, math.ceil(math.sqrt(n)))
    return max(1, math.ceil(n / cols)), cols


def mosaic(images: np.ndarray, rows: int, cols: int, pad: int = 1, fill: float = 1.0) -> np.ndarray:
    """``images`` (N, H, W[, C]) laid out row by row on a ``rows`` x ``cols`` grid."""
    n, height, width = images.shape[:3]
    channels = images.shape[3:]
    out = np.full(
        (rows * (height + pad) + pad, cols * (width + pad) + pad, *channels), fill, dtype=np.float64
    )
    for i in range(n):
        top = pad + (i // cols) * (height + pad)
        left = pad + (i % cols) * (width + pad)
        out[top : top + height, left : left + width] = images[i]
    return out


# -- grids of titled tiles -------------------------------------------------------------------


def tile_grid(
    count: int, titles: Sequence[str], title: str, colorbar: bool = False, note: str = ""
) -> tuple[Figure, list[Axes]]:
    """A figure of ``count`` square tile axes (no ticks), each under its own title, with a
    suptitle, optionally room for a colorbar on the right and a note at the bottom."""
    rows, cols = grid_shape(count)
    lines = max((t.count("\n") + 1 for t in titles), default=1)
    gap = 0.1
    cell_w, cell_h = TILE_INCHES, TILE_INCHES + lines * LINE_INCHES
    top, bottom = 0.45, (0.35 if note else 0.1)
    right = 1.2 if colorbar else 0.0
    width = max(cols * cell_w + gap + right, 5.5 if note else 3.0)
    height = top + rows * cell_h + bottom
    fig = new_figure(width, height)
    left = (width - right - cols * cell_w) / 2
    axes = []
    for i, name in enumerate(titles[:count]):
        row, col = divmod(i, cols)
        ax = add_axes(
            fig,
            left + col * cell_w + gap / 2,
            height - top - (row + 1) * cell_h + gap / 2,
            cell_w - gap,
            cell_w - gap,
        )
        ax.set_xticks([])  # empty, not just hidden: matplotlib measures hidden ticks too
        ax.set_yticks([])
        ax.set_axis_off()
        ax.set_title(name, fontsize=TILE_TITLE_SIZE, pad=3)
        axes.append(ax)
    put_title(fig, title)
    if note:
        fig.text(0.5, 0.1 / height, note, ha="center", va="bottom", fontsize=TILE_TITLE_SIZE)
    return fig, axes


def weights_figure(tiles: np.ndarray, titles: Sequence[str], title: str) -> Figure:
    """One tile per unit: its incoming weights drawn as the input image.

    Grey inputs share one diverging scale, symmetric about zero and set by the largest
    absolute weight shown. RGB inputs cannot carry a diverging map, so each tile is scaled
    to [0, 1] on its own, and the figure says so.
    """
    rgb = is_rgb(tiles)
    tiles = grey(tiles)
    fig, axes = tile_grid(len(tiles), titles, title, colorbar=not rgb, note=RGB_NOTE if rgb else "")
    if rgb:
        for ax, tile in zip(axes, scale_per_tile(tiles)):
            ax.imshow(tile)
        return fig
    limit = float(np.abs(tiles).max()) or 1.0
    for ax, tile in zip(axes, tiles):
        image = ax.imshow(tile, cmap=WEIGHT_CMAP, vmin=-limit, vmax=limit)
    width, height = fig.get_size_inches()
    bar_height = min(height - 0.8, 3.0)
    bar = add_axes(fig, width - 1.0, (height - 0.45 - bar_height) / 2 + 0.05, 0.15, bar_height)
    fig.colorbar(image, cax=bar, label="weight (green +, purple -)")
    return fig


def weights_mosaic(tiles: np.ndarray, zoom: int | None = None) -> np.ndarray:
    """The weight tiles as one RGB uint8 image (for MLflow's image series), coloured like
    :func:`weights_figure`. Each pixel is enlarged ``zoom`` times; by default enough for a
    28-pixel tile to span 84 pixels, so that small inputs stay visible in the UI's grid."""
    zoom = zoom or max(1, 84 // tiles.shape[1])
    if is_rgb(tiles):
        coloured = scale_per_tile(tiles)
    else:
        tiles = grey(tiles)
        limit = float(np.abs(tiles).max()) or 1.0
        coloured = colormaps[WEIGHT_CMAP]((tiles / limit + 1.0) / 2.0)[..., :3]
    rows, cols = square_grid(len(tiles))
    image = mosaic(coloured, rows, cols, pad=1, fill=1.0)
    image = image.repeat(zoom, axis=0).repeat(zoom, axis=1)
    return np.round(image * 255).astype(np.uint8)


def examples_figure(images: np.ndarray, titles: Sequence[str], title: str) -> Figure:
    """Images in [0, 1] as a grid of tiles, each under its own (few-line) title."""
    rgb = is_rgb(images)
    images = grey(images)
    fig, axes = tile_grid(len(images), titles, title)
    for ax, image in zip(axes, images):
        if rgb:
            ax.imshow(image)
        else:
            ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0)
    return fig


# -- confusion matrix -----------------------------------------------------------------------


def confusion_figure(counts: np.ndarray, class_names: Sequence[str], title: str) -> Figure:
    """Counts heatmap, true classes down, predicted across, each cell's count written in it.

    The colour scale is logarithmic: on a linear one the diagonal's thousands wash out the
    handful of mistakes the figure is read for. Empty cells stay white.
    """
    k = len(class_names)
    fig = new_figure(1.0, 1.0)
    names = text_inches(fig, class_names, LABEL_SIZE)
    rotate = max(len(name) for name in class_names) > 2
    side = max(0.5 * k + 0.5, 4.0)
    left = 0.4 + names + 0.15  # axis label, tick labels, ticks
    bottom = 0.4 + (names if rotate else 0.2) + 0.15
    top, right = 0.55, 1.4  # title; colorbar and its label
    width, height = left + side + right, bottom + side + top
    fig.set_size_inches(width, height)

    ax = add_axes(fig, left, bottom, side, side)
    cmap = colormaps["Blues"].with_extremes(bad="white")
    most = max(int(counts.max()), 2)
    image = ax.imshow(np.ma.masked_equal(counts, 0), cmap=cmap, norm=LogNorm(vmin=1, vmax=most))
    fig.colorbar(
        image, cax=add_axes(fig, left + side + 0.3, bottom, 0.2, side), label="images (log scale)"
    )

    font = 8 if k <= 12 else 7
    dark_from = math.log(most) * 0.6
    for (true, predicted), count in np.ndenumerate(counts):
        if count:
            colour = "white" if math.log(count) > dark_from else "black"
            ax.text(
                predicted, true, str(count), ha="center", va="center", fontsize=font, color=colour
            )

    ax.set_xticks(range(k), class_names, rotation=90 if rotate else 0, fontsize=LABEL_SIZE)
    ax.set_yticks(range(k), class_names, fontsize=LABEL_SIZE)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    put_title(fig, title)
    return fig


# -- class samples ----------------------------------------------------------------------------


def class_samples_figure(
    samples: Sequence[np.ndarray], class_names: Sequence[str], title: str
) -> Figure:
    """One row per class of its sample images (each (m, H, W[, C]) in [0, 1]), named on the left.

    Drawn as one mosaic image rather than an axes per image: a hundred small axes would
    cost seconds to lay out.
    """
    per_row = max(len(s) for s in samples)
    first = next(s for s in samples if len(s))
    blank = np.ones((1, *first.shape[1:]))
    padded = [np.concatenate([s, *[blank] * (per_row - len(s))]) for s in samples]
    pad = 2
    grid = mosaic(grey(np.concatenate(padded)), len(samples), per_row, pad=pad, fill=1.0)

    # At 100 dpi a 64-pixel photo keeps its own pixels; 28-pixel digits get a little larger.
    height = first.shape[1]
    inches_per_pixel = max(0.55, (height + pad) / 100) / (height + pad)
    grid_w, grid_h = grid.shape[1] * inches_per_pixel, grid.shape[0] * inches_per_pixel
    fig = new_figure(1.0, 1.0)
    left = text_inches(fig, class_names, LABEL_SIZE) + 0.25
    top, bottom = 0.45, 0.1
    width = max(left + grid_w + 0.1, 4.5)
    fig.set_size_inches(width, top + grid_h + bottom)
    ax = add_axes(fig, left, bottom, grid_w, grid_h)
    if is_rgb(first):
        ax.imshow(grid)
    else:
        ax.imshow(grid, cmap="gray", vmin=0.0, vmax=1.0)
    centres = [pad + i * (height + pad) + height / 2 for i in range(len(samples))]
    ax.set_yticks(centres, class_names, fontsize=LABEL_SIZE)
    ax.set_xticks([])
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    put_title(fig, title)
    return fig


# -- training curves ---------------------------------------------------------------------------


def curves_figure(history: pd.DataFrame, title: str) -> Figure:
    """Loss and accuracy per epoch, train against validation (the course's plot(history)).

    ``history`` is indexed by epoch (MLflow's step) and has columns such as ``train/loss``,
    ``val/loss``, ``train/acc``, ``val/acc``; missing ones are skipped.
    """
    fig = new_figure(10.0, 4.0)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.13, top=0.86, wspace=0.25)
    axes = fig.subplots(1, 2)
    for ax, quantity, label in zip(axes, ("loss", "acc"), ("loss", "accuracy")):
        for split, colour in (("train", "tab:blue"), ("val", "tab:orange")):
            column = f"{split}/{quantity}"
            if column in history:
                values = history[column].dropna()
                ax.plot(values.index, values.to_numpy(), marker="o", color=colour, label=split)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    put_title(fig, title)
    return fig
