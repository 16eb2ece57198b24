"""The course's figures as pure functions: arrays in, a matplotlib Figure (or an image) out.

No Lightning, no MLflow here. Figures are built on matplotlib's object API with the Agg
canvas, never pyplot: nothing global keeps them alive, so they need no ``plt.close`` and
draw the same in a headless training job. Sizes grow with the class count, so that ten
digit classes and seventeen long flower names both stay readable.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from denselab.analysis import scale_per_tile

# Green positive, purple negative, white at zero: the course's weight images.
WEIGHT_CMAP = "PRGn"
TILE_INCHES = 1.4
MAX_TILES_PER_ROW = 8
RGB_NOTE = "RGB tiles: each unit's weights min-max scaled to [0, 1] on their own; colours compare within a tile only."


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # lets callers measure text (tests) and save without pyplot
    return fig


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


def hide_axes(axes: np.ndarray) -> None:
    """Tiles need no axes. Empty tick lists, not only axis off: matplotlib still measures
    the default ticks of a hidden axis to place each title, which doubles the drawing time."""
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_axis_off()


# -- confusion matrix -----------------------------------------------------------------------


def confusion_figure(counts: np.ndarray, class_names: Sequence[str], title: str) -> Figure:
    """Counts heatmap, true classes down, predicted across, each cell's count written in it.

    The colour scale is logarithmic: on a linear one the diagonal's thousands wash out the
    handful of mistakes the figure is read for. Empty cells stay white.
    """
    k = len(class_names)
    side = 0.5 * k + 2.5
    fig = new_figure(side + 1.0, side)
    ax = fig.add_subplot()
    cmap = colormaps["Blues"].with_extremes(bad="white")
    top = max(int(counts.max()), 2)
    image = ax.imshow(np.ma.masked_equal(counts, 0), cmap=cmap, norm=LogNorm(vmin=1, vmax=top))
    fig.colorbar(image, ax=ax, shrink=0.8, label="images (log scale)")

    font = 8 if k <= 12 else 7
    dark_from = math.log(top) * 0.6
    for (true, predicted), count in np.ndenumerate(counts):
        if count:
            colour = "white" if math.log(count) > dark_from else "black"
            ax.text(predicted, true, str(count), ha="center", va="center", fontsize=font, color=colour)

    long_names = max(len(name) for name in class_names) > 2
    ax.set_xticks(range(k), class_names, rotation=90 if long_names else 0, fontsize=9)
    ax.set_yticks(range(k), class_names, fontsize=9)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=11)
    return fig


# -- first-layer weights ---------------------------------------------------------------------


def weights_figure(tiles: np.ndarray, titles: Sequence[str], title: str) -> Figure:
    """One tile per unit: its incoming weights drawn as the input image.

    Grey inputs share one diverging scale, symmetric about zero and set by the largest
    absolute weight shown. RGB inputs cannot carry a diverging map, so each tile is scaled
    to [0, 1] on its own, and the figure says so.
    """
    rgb = is_rgb(tiles)
    tiles = grey(tiles)
    rows, cols = grid_shape(len(tiles))
    fig = new_figure(cols * TILE_INCHES + (0 if rgb else 1.0), rows * (TILE_INCHES + 0.25) + 0.8)
    axes = fig.subplots(rows, cols, squeeze=False)
    limit = float(np.abs(tiles).max()) or 1.0
    shown = scale_per_tile(tiles) if rgb else tiles
    image = None
    for ax, tile, name in zip(axes.flat, shown, titles):
        if rgb:
            ax.imshow(tile)
        else:
            image = ax.imshow(tile, cmap=WEIGHT_CMAP, vmin=-limit, vmax=limit)
        ax.set_title(name, fontsize=8)
    hide_axes(axes)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label="weight (green +, purple -)")
    fig.suptitle(title, fontsize=11)
    if rgb:
        fig.supxlabel(RGB_NOTE, fontsize=8)
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
    rows, cols = grid_shape(len(tiles))
    image = mosaic(coloured, rows, cols, pad=1, fill=1.0)
    image = image.repeat(zoom, axis=0).repeat(zoom, axis=1)
    return np.round(image * 255).astype(np.uint8)


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


# -- example images ----------------------------------------------------------------------------


def examples_figure(images: np.ndarray, titles: Sequence[str], title: str) -> Figure:
    """Images in [0, 1] as a grid of tiles, each under its own (up to three-line) title."""
    rgb = is_rgb(images)
    images = grey(images)
    rows, cols = grid_shape(len(images))
    lines = max((t.count("\n") + 1 for t in titles), default=1)
    fig = new_figure(cols * TILE_INCHES, rows * (TILE_INCHES + 0.15 * lines) + 0.5)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, image, name in zip(axes.flat, images, titles):
        if rgb:
            ax.imshow(image)
        else:
            ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0)
        ax.set_title(name, fontsize=8)
    hide_axes(axes)
    fig.suptitle(title, fontsize=11)
    return fig


def class_samples_figure(samples: Sequence[np.ndarray], class_names: Sequence[str], title: str) -> Figure:
    """One row per class of its sample images (each (m, H, W[, C]) in [0, 1]), named on the left.

    Drawn as one mosaic image rather than an axes per image: a hundred small axes would
    cost seconds to lay out.
    """
    per_row = max(len(s) for s in samples)
    first = next(s for s in samples if len(s))
    height, width = first.shape[1:3]
    blank = np.ones((1, *first.shape[1:]))
    padded = [
        np.concatenate([s, np.repeat(blank, per_row - len(s), axis=0)]) if len(s) < per_row else s
        for s in samples
    ]
    grid = mosaic(grey(np.concatenate(padded)), len(samples), per_row, pad=2, fill=1.0)
    # At 100 dpi a 64-pixel photo keeps its own pixels; 28-pixel digits get a little larger.
    row_inches = max(0.55, (height + 2) / 100)
    fig = new_figure(per_row * row_inches * width / height + 2.0, len(samples) * row_inches + 0.8)
    ax = fig.add_subplot()
    if is_rgb(first):
        ax.imshow(grid)
    else:
        ax.imshow(grid, cmap="gray", vmin=0.0, vmax=1.0)
    centres = [2 + i * (height + 2) + height / 2 for i in range(len(samples))]
    ax.set_yticks(centres, class_names, fontsize=9)
    ax.set_xticks([])
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(title, fontsize=11)
    return fig


# -- training curves ---------------------------------------------------------------------------


def curves_figure(history: pd.DataFrame, title: str) -> Figure:
    """Loss and accuracy per epoch, train against validation (the course's plot(history)).

    ``history`` is indexed by epoch (MLflow's step) and has columns such as ``train/loss``,
    ``val/loss``, ``train/acc``, ``val/acc``; missing ones are skipped.
    """
    fig = new_figure(10.0, 4.0)
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
        ax.legend()
    fig.suptitle(title, fontsize=11)
    return fig
