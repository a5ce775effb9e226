"""The PNG pictures the command line writes: overlays, evaluations, comparisons and curves.

Everything is drawn on a bare ``matplotlib.figure.Figure`` (no pyplot), so it works on any
backend, headless included, and nothing piles up in pyplot's figure registry in long loops.
Image panels are laid out in exact pixels (see :func:`panel_layout`): a 256 x 256 image is
drawn at least ~768 px (one panel) or 512 px (several panels) wide so nuclei and their labels
can be read, and a larger image keeps its native resolution.
Masks are a bool stack [H, W, N] or an integer label image [H, W] (0 = background).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib import patheffects
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from mrcnn import utils
from mrcnn.mask_iou import mask_iou
from mrcnn.runs import RunFolder
from mrcnn.visualize import mask_outlines, random_colors
from nucleus.errors import InputError
from nucleus.formats.io_utils import atomic_write
from nucleus.scoring import metric

DPI = 100
OVERLAY_MIN_WIDTH = 768   # px of a single overlay
PANEL_MIN_WIDTH = 512     # px of each panel when several stand side by side
MARGIN = 10               # px around and between panels
TITLE_PX = 34             # px of the figure title band
PANEL_TITLE_PX = 26       # px of each panel's title
LEGEND_PX = 36            # px of the legend band under the panels

TP_COLOR = (0.0, 0.85, 0.0)   # prediction matched to a true nucleus
FP_COLOR = (1.0, 0.0, 0.0)    # prediction with no true nucleus
FN_COLOR = (1.0, 0.65, 0.0)   # true nucleus nobody found
FILL_ALPHA = 0.45


# ----------------------------------------------------------------------------- layout
@dataclass(frozen=True)
class PanelLayout:
    """Pixel geometry of a row of equally sized image panels in the saved PNG."""

    width: int          # PNG width, px
    height: int         # PNG height, px
    panel_width: int
    panel_height: int
    top: int            # row of the panels' top edge
    lefts: tuple[int, ...]  # column of each panel's left edge
    scale: float        # PNG px per image px (horizontal; vertical differs by rounding only)
    image_shape: tuple[int, int]

    def to_pixel(self, panel: int, y: float, x: float) -> tuple[int, int]:
        """PNG (row, column) of the centre of image pixel (y, x) in panel ``panel``."""
        h, w = self.image_shape
        row = self.top + (y + 0.5) * self.panel_height / h
        col = self.lefts[panel] + (x + 0.5) * self.panel_width / w
        return int(row), int(col)

    def axes_rect(self, panel: int) -> list[float]:
        """Matplotlib [left, bottom, width, height] in figure fractions."""
        bottom = self.height - self.top - self.panel_height
        return [self.lefts[panel] / self.width, bottom / self.height,
                self.panel_width / self.width, self.panel_height / self.height]


def panel_layout(image_shape: Sequence[int], n_panels: int, min_width: int = PANEL_MIN_WIDTH,
                 header: int = 0, footer: int = 0, margin: int = MARGIN) -> PanelLayout:
    """Where ``n_panels`` copies of an image of ``image_shape`` land in the PNG.

    Panels are upscaled to ``min_width`` px if the image is narrower, never downscaled.
    """
    h, w = int(image_shape[0]), int(image_shape[1])
    scale = max(1.0, min_width / w)
    pw, ph = int(round(w * scale)), int(round(h * scale))
    lefts = tuple(margin + k * (pw + margin) for k in range(n_panels))
    return PanelLayout(width=margin + n_panels * (pw + margin),
                       height=header + ph + max(footer, margin), panel_width=pw,
                       panel_height=ph, top=header, lefts=lefts, scale=scale, image_shape=(h, w))


def _figure(layout: PanelLayout) -> tuple[Figure, list]:
    fig = Figure(figsize=(layout.width / DPI, layout.height / DPI), dpi=DPI)
    axes = []
    for k in range(len(layout.lefts)):
        ax = fig.add_axes(layout.axes_rect(k))
        ax.set_axis_off()
        axes.append(ax)
    return fig, axes


def _save(fig: Figure, path: str | os.PathLike) -> str:
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=DPI)
    return path


# ----------------------------------------------------------------------------- inputs
def _image(image: np.ndarray, path: str | os.PathLike) -> np.ndarray:
    try:
        return utils.to_rgb_uint8(image)
    except ValueError as e:
        raise InputError(f"cannot draw {os.fspath(path)}: bad image: {e}") from None


def _stack(masks: np.ndarray, shape: tuple[int, int], path: str | os.PathLike,
           what: str) -> np.ndarray:
    """Masks as a bool [H, W, N] stack without empty instances, checked against the image."""
    masks = np.asarray(masks)
    if masks.ndim == 2:
        if masks.dtype == bool or not np.issubdtype(masks.dtype, np.integer):
            raise InputError(f"cannot draw {os.fspath(path)}: {what} is 2-D {masks.dtype}; "
                             "give an integer label image [H, W] or a bool stack [H, W, N]")
        masks = metric.labels_to_masks(masks)
    if masks.ndim != 3:
        raise InputError(f"cannot draw {os.fspath(path)}: {what} must be [H, W, N] or a label "
                         f"image [H, W], got shape {masks.shape}")
    if masks.shape[:2] != tuple(shape):
        raise InputError(f"cannot draw {os.fspath(path)}: {what} are {masks.shape[0]}x"
                         f"{masks.shape[1]} but the image is {shape[0]}x{shape[1]}")
    masks = masks.astype(bool, copy=False)
    return masks[:, :, masks.any(axis=(0, 1))] if masks.shape[2] else masks


def _scores(scores: Sequence[float] | None, n: int, path: str | os.PathLike) -> np.ndarray | None:
    if scores is None:
        return None
    scores = np.asarray(scores, dtype=float).reshape(-1)
    if len(scores) != n:
        raise InputError(f"cannot draw {os.fspath(path)}: {n} masks but {len(scores)} scores")
    return scores


def _iou(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """IoU [n_gt, n_pred] of two stacks of non-empty masks; raw, overlapping masks allowed."""
    try:
        return metric.iou_matrix(gt, pred)  # fast, but needs disjoint masks
    except InputError:
        return mask_iou(gt, pred)  # the same values, for masks that overlap


# ----------------------------------------------------------------------------- drawing
def _draw_masks(ax, image: np.ndarray, masks: np.ndarray, colors: Sequence, alpha: float,
                labels: Sequence[str] | None = None, fill: Sequence[bool] | None = None,
                dashed: Sequence[bool] | None = None) -> None:
    """Image with each mask filled (one blend pass for all), outlined and optionally labelled."""
    h, w = image.shape[:2]
    color_layer = np.zeros((h, w, 3), np.float32)
    covered = np.zeros((h, w), bool)
    for i in range(masks.shape[2]):
        if fill is None or fill[i]:
            color_layer[masks[:, :, i]] = colors[i]
            covered |= masks[:, :, i]
    blended = image.astype(np.float32)
    blended[covered] = (1 - alpha) * blended[covered] + alpha * 255 * color_layer[covered]
    ax.imshow(blended.astype(np.uint8), interpolation="nearest", aspect="auto")
    segments, seg_colors, seg_styles = [], [], []
    for i in range(masks.shape[2]):
        for outline in mask_outlines(masks[:, :, i]):
            segments.append(outline)
            seg_colors.append(colors[i])
            seg_styles.append("--" if dashed is not None and dashed[i] else "-")
    if segments:
        ax.add_collection(LineCollection(segments, colors=seg_colors, linestyles=seg_styles,
                                         linewidths=1.0))
    if labels is not None:
        stroke = [patheffects.withStroke(linewidth=2, foreground="black")]
        for i, text in enumerate(labels):
            if not text:
                continue
            ys, xs = np.nonzero(masks[:, :, i])
            ax.text(xs.mean(), ys.mean(), text, color="white", fontsize=6, ha="center",
                    va="center", path_effects=stroke)
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)


# ----------------------------------------------------------------------------- image pictures
def save_overlay(path: str | os.PathLike, image: np.ndarray, masks: np.ndarray,
                 scores: Sequence[float] | None = None) -> str:
    """Each nucleus in its own colour (fill, outline, score) over the image, no margins.

    Returns the path. The PNG is the image's size, or ~768 px wide for small images.
    """
    rgb = _image(image, path)
    raw = np.asarray(masks)
    stack = _stack(raw, rgb.shape[:2], path, "masks")
    if scores is not None:
        n_raw = raw.shape[2] if raw.ndim == 3 else stack.shape[2]
        scores = _scores(scores, n_raw, path)
        if raw.ndim == 3:
            scores = scores[raw.any(axis=(0, 1))]  # follow the removal of empty masks
    layout = panel_layout(rgb.shape, 1, min_width=OVERLAY_MIN_WIDTH, margin=0)
    fig, (ax,) = _figure(layout)
    labels = [f"{s:.2f}" for s in scores] if scores is not None else None
    _draw_masks(ax, rgb, stack, random_colors(stack.shape[2]), FILL_ALPHA, labels)
    return _save(fig, path)


@dataclass(frozen=True)
class Evaluation:
    """Which instances matched at one IoU threshold, and the image's DSB score."""

    tp_pred: np.ndarray   # bool per prediction
    tp_gt: np.ndarray     # bool per true nucleus
    dsb_score: float

    @property
    def counts(self) -> tuple[int, int, int]:
        """(TP, FP, FN)."""
        tp = int(self.tp_pred.sum())
        return tp, int(len(self.tp_pred) - tp), int(len(self.tp_gt) - self.tp_gt.sum())


def evaluate(gt: np.ndarray, pred: np.ndarray, iou_threshold: float = 0.5) -> Evaluation:
    """Match non-empty bool stacks one to one at IoU > ``iou_threshold``, as the DSB metric does."""
    iou = _iou(gt, pred)
    pairs = metric.match(iou, iou_threshold)
    tp_gt = np.zeros(gt.shape[2], bool)
    tp_pred = np.zeros(pred.shape[2], bool)
    tp_gt[pairs[:, 0]] = True
    tp_pred[pairs[:, 1]] = True
    return Evaluation(tp_pred, tp_gt, metric.score_from_iou(iou).score)


def save_evaluation(path: str | os.PathLike, image: np.ndarray, gt_masks: np.ndarray,
                    pred_masks: np.ndarray, scores: Sequence[float] | None = None,
                    iou_threshold: float = 0.5, title: str = "") -> str:
    """Ground truth (left) beside the prediction (right), coloured by outcome.

    Left: true nuclei that were found in green, missed ones in orange. Right: predictions
    matching a true nucleus (IoU > ``iou_threshold``) in green, false positives in red, and the
    missed true nuclei outlined dashed in orange for context. The title carries the counts and
    the image's DSB score (mean over IoU 0.50..0.95). Returns the path.
    """
    rgb = _image(image, path)
    gt = _stack(gt_masks, rgb.shape[:2], path, "ground-truth masks")
    raw_pred = np.asarray(pred_masks)
    pred = _stack(raw_pred, rgb.shape[:2], path, "predicted masks")
    if scores is not None and raw_pred.ndim == 3:
        scores = _scores(scores, raw_pred.shape[2], path)
        scores = scores[raw_pred.any(axis=(0, 1))]
    elif scores is not None:
        scores = _scores(scores, pred.shape[2], path)
    result = evaluate(gt, pred, iou_threshold)
    tp, fp, fn = result.counts

    header = TITLE_PX + PANEL_TITLE_PX
    layout = panel_layout(rgb.shape, 2, header=header, footer=LEGEND_PX)
    fig, (ax_gt, ax_pred) = _figure(layout)
    _draw_masks(ax_gt, rgb, gt, [TP_COLOR if m else FN_COLOR for m in result.tp_gt], FILL_ALPHA)
    ax_gt.set_title(f"Ground truth: {gt.shape[2]} nuclei", fontsize=11)
    # Predictions first, then the missed truths as dashed outlines without fill.
    both = np.concatenate([pred, gt[:, :, ~result.tp_gt]], axis=2)
    colors = [TP_COLOR if m else FP_COLOR for m in result.tp_pred] + [FN_COLOR] * fn
    fill = [True] * pred.shape[2] + [False] * fn
    labels = None
    if scores is not None:
        labels = [f"{s:.2f}" for s in scores] + [""] * fn
    _draw_masks(ax_pred, rgb, both, colors, FILL_ALPHA, labels, fill=fill,
                dashed=[not f for f in fill])
    ax_pred.set_title(f"Prediction: {pred.shape[2]} nuclei", fontsize=11)
    head = f"{title} - " if title else ""
    fig.suptitle(f"{head}DSB score {result.dsb_score:.3f}   "
                 f"(at IoU > {iou_threshold:g}: {tp} TP, {fp} FP, {fn} FN)",
                 y=1 - 6 / layout.height, va="top", fontsize=12)
    fig.legend(handles=[Patch(color=TP_COLOR, label=f"true positive ({tp})"),
                        Patch(color=FP_COLOR, label=f"false positive ({fp})"),
                        Patch(color=FN_COLOR, label=f"missed / false negative ({fn})")],
               loc="lower center", ncol=3, frameon=False, fontsize=10,
               bbox_to_anchor=(0.5, 2 / layout.height))
    return _save(fig, path)


def save_comparison(path: str | os.PathLike, image: np.ndarray,
                    panels: Mapping[str, np.ndarray], reference: str | None = None,
                    include_image: bool = False) -> str:
    """Several segmentations of one image side by side, e.g. truth, FCN-8s and Mask R-CNN.

    With ``reference`` (a key of ``panels``, e.g. "Ground truth") the other panels' titles also
    give their DSB score against it. ``include_image`` adds the bare image as the first panel.
    Returns the path.
    """
    rgb = _image(image, path)
    if not panels:
        raise InputError(f"cannot draw {os.fspath(path)}: no panels given")
    stacks = {name: _stack(m, rgb.shape[:2], path, f"masks of panel {name!r}")
              for name, m in panels.items()}
    if reference is not None and reference not in stacks:
        raise InputError(f"cannot draw {os.fspath(path)}: reference panel {reference!r} is not "
                         f"one of {list(stacks)}")
    n = len(stacks) + bool(include_image)
    layout = panel_layout(rgb.shape, n, header=PANEL_TITLE_PX + 6)
    fig, axes = _figure(layout)
    if include_image:
        axes[0].imshow(rgb, interpolation="nearest", aspect="auto")
        axes[0].set_title("Image", fontsize=11)
        axes = axes[1:]
    for ax, (name, stack) in zip(axes, stacks.items()):
        _draw_masks(ax, rgb, stack, random_colors(stack.shape[2]), FILL_ALPHA)
        text = f"{name}: {stack.shape[2]} nuclei"
        if reference is not None and name != reference:
            text += f", DSB {evaluate(stacks[reference], stack).dsb_score:.3f}"
        ax.set_title(text, fontsize=11)
    return _save(fig, path)


# ----------------------------------------------------------------------------- curves
def _read_csv(csv_path: str | os.PathLike, what: str, required: Sequence[str] = ()):
    """A CSV as a numeric DataFrame, or an InputError naming the file and what is wrong."""
    csv_path = os.fspath(csv_path)
    if not os.path.isfile(csv_path):
        raise InputError(f"{csv_path}: {what} file not found")
    try:
        frame = pd.read_csv(csv_path)
    except pd.errors.EmptyDataError:
        raise InputError(f"{csv_path}: {what} file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise InputError(f"{csv_path}: {what} file is not a readable CSV: {e}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise InputError(f"{csv_path}: {what} file lacks column(s) {missing}; "
                         f"found {list(frame.columns)}")
    if frame.empty:
        raise InputError(f"{csv_path}: {what} file has a header but no rows")
    return frame.apply(pd.to_numeric, errors="coerce")


def _curve_figure(n_panels: int) -> tuple[Figure, list]:
    fig = Figure(figsize=(5.5 * n_panels, 4.2), dpi=DPI, layout="constrained")
    return fig, list(np.atleast_1d(fig.subplots(1, n_panels)))


def load_training_history(history_csv: str | os.PathLike | Sequence[str | os.PathLike]):
    """Keras CSVLogger files of successive stages joined into one DataFrame.

    A stage whose epochs restart (a fresh logger) is shifted to follow the previous one.
    Returns (history, names of the training loss columns, epoch where each later stage starts).
    """
    paths = [history_csv] if isinstance(history_csv, (str, os.PathLike)) else list(history_csv)
    if not paths:
        raise InputError("save_training_curves: no training history file given")
    frames, starts = [], []
    next_epoch = None
    for p in paths:
        frame = _read_csv(p, "training history")
        if "epoch" not in frame.columns:
            frame["epoch"] = np.arange(len(frame))
        # CSVLogger counts epochs from 0; checkpoints and val_map.csv count completed epochs
        # from 1. Plot completed epochs so that both curves share one axis.
        frame["epoch"] = frame["epoch"] + 1
        # A stage logged by a fresh CSVLogger restarts at 0: shift it after the previous one.
        if next_epoch is not None and frame["epoch"].min() < next_epoch:
            frame["epoch"] += next_epoch - frame["epoch"].min()
        starts.append(float(frame["epoch"].min()))
        next_epoch = frame["epoch"].max() + 1
        frames.append(frame)
    history = pd.concat(frames, ignore_index=True)
    losses = [c for c in history.columns if c.endswith("loss") and not c.startswith("val_")
              and history[c].notna().any()]
    if not losses:
        raise InputError(f"{', '.join(map(os.fspath, paths))}: no loss columns (names ending "
                         f"in 'loss'); found {list(history.columns)}")
    return history, losses, starts[1:]


KIND_COLORS = {"fluorescence": "tab:green", "brightfield": "tab:gray", "colour": "tab:red"}
"""Line colour of each image kind's validation mAP (:mod:`nucleus.kinds`)."""


def _plot_map(ax, frame, x: str, csv_path: str | os.PathLike) -> None:
    """Validation mAP against ``x``, plus thin dashed ``map_<kind>`` curves where recorded."""
    frame = frame.dropna(subset=[x, "map"])
    if frame.empty:
        raise InputError(f"{os.fspath(csv_path)}: no numeric ({x}, map) rows")
    ax.plot(frame[x], frame["map"], marker="o", markersize=3, color="tab:purple",
            label="validation mAP")
    for kind, color in KIND_COLORS.items():
        column = f"map_{kind}"
        if column in frame.columns and frame[column].notna().any():
            part = frame.dropna(subset=[column])
            ax.plot(part[x], part[column], marker=".", markersize=3, linewidth=1,
                    linestyle="--", color=color, label=kind)
    best = frame.loc[frame["map"].idxmax()]
    ax.plot([best[x]], [best["map"]], marker="*", markersize=12, color="gold",
            markeredgecolor="black", linestyle="none",
            label=f"best {best['map']:.3f} at {x} {best[x]:g}")
    ax.set_xlabel("hours" if x == "hours" else "epoch")
    ax.set_ylabel("DSB mAP (IoU 0.50-0.95)")
    ax.set_title("Validation mAP")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def save_training_curves(path: str | os.PathLike,
                         history_csv: str | os.PathLike | Sequence[str | os.PathLike],
                         val_map_csv: str | os.PathLike | None = None) -> str:
    """Losses against epoch from Keras CSVLogger file(s), plus the validation mAP if given.

    Several history files (one per training stage) are joined in order, with a dotted line
    where each later stage starts. Panels: total loss (train and validation); each other loss
    column (train solid, validation dashed) when present; validation mAP from a CSV with
    columns ``epoch, map``. Returns the path.
    """
    history, losses, stage_starts = load_training_history(history_csv)
    parts = [c for c in losses if c != "loss"]
    mapframe = (_read_csv(val_map_csv, "validation mAP", required=("epoch", "map"))
                if val_map_csv is not None else None)
    n_panels = ("loss" in losses) + bool(parts) + (mapframe is not None)
    fig, axes = _curve_figure(n_panels)
    axes_iter = iter(axes)
    colors = random_colors(len(losses), bright=False)
    epoch = history["epoch"]
    if "loss" in losses:
        ax = next(axes_iter)
        ax.plot(epoch, history["loss"], color="tab:blue", label="train loss")
        if "val_loss" in history and history["val_loss"].notna().any():
            ax.plot(epoch, history["val_loss"], color="tab:orange", label="validation loss")
        ax.set_title("Total loss")
    if parts:
        ax = next(axes_iter)
        for color, name in zip(colors, parts):
            ax.plot(epoch, history[name], color=color, label=name)
            val = f"val_{name}"
            if val in history and history[val].notna().any():
                ax.plot(epoch, history[val], color=color, linestyle="--", label=val)
        ax.set_title("Loss components (dashed: validation)")
    for ax in axes[:n_panels - (mapframe is not None)]:
        for start in stage_starts:
            ax.axvline(start, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if mapframe is not None:
        _plot_map(next(axes_iter), mapframe, "epoch", val_map_csv)
    return _save(fig, path)


def save_run_curves(run_dir: str | os.PathLike, out: str | os.PathLike | None = None
                    ) -> str | None:
    """:func:`save_training_curves` of a run folder, Mask R-CNN's or the FCN's: its
    ``history.csv``, and its ``val_map.csv`` when there is one, drawn to ``out`` (default
    ``training_curves.png`` in the folder). None when the run has no history yet."""
    run = RunFolder(os.fspath(run_dir))
    if not os.path.exists(run.history):
        return None
    return save_training_curves(out or run.curves, run.history,
                                run.val_map if os.path.exists(run.val_map) else None)


def save_map_curve(path: str | os.PathLike, csv_path: str | os.PathLike,
                   x: str = "epoch") -> str:
    """Validation mAP against ``x`` = "epoch" or "hours" (CSV columns ``epoch, map[, hours]``)."""
    if x not in ("epoch", "hours"):
        raise InputError(f"save_map_curve: x must be 'epoch' or 'hours', got {x!r}")
    frame = _read_csv(csv_path, "validation mAP", required=(x, "map"))
    fig, (ax,) = _curve_figure(1)
    _plot_map(ax, frame, x, csv_path)
    return _save(fig, path)


def save_sweep_curves(path: str | os.PathLike, csv_path: str | os.PathLike,
                      title: str = "") -> str:
    """Validation mAP against epoch, one curve per setting of a sweep (``nucleus sweep``).

    CSV columns ``setting, <one per swept name>, epoch, map[, map_<kind> ...]`` (the columns
    between ``setting`` and ``epoch`` are the swept names). A second panel per image kind
    shows ``map_<kind>`` where the runs recorded it. The legend names only the values that
    differ between settings; the others go to the title. Returns the path.
    """
    frame = _read_csv(csv_path, "sweep", required=("setting", "epoch", "map"))
    raw = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    raw.columns = [str(c).strip() for c in raw.columns]
    columns = list(raw.columns)
    if columns.index("epoch") < columns.index("setting"):
        raise InputError(f"{os.fspath(csv_path)}: sweep file must list setting, the swept "
                         f"names, then epoch; found {columns}")
    axes = columns[columns.index("setting") + 1:columns.index("epoch")]
    varying = [a for a in axes if raw[a].nunique() > 1]
    fixed = [f"{a}={raw[a].iloc[0]}" for a in axes if a not in varying]
    kinds = [k for k in KIND_COLORS if f"map_{k}" in frame.columns
             and frame[f"map_{k}"].notna().any()]

    fig, axs = _curve_figure(1 + len(kinds))
    settings = list(dict.fromkeys(raw["setting"]))
    colors = [f"C{i % 10}" for i in range(len(settings))]
    for ax, column, name in zip(axs, ["map", *(f"map_{k}" for k in kinds)],
                                ["all images", *kinds]):
        for color, setting in zip(colors, settings):
            rows = frame[(raw["setting"] == setting).to_numpy()].dropna(subset=["epoch", column])
            if not rows.empty:
                rows = rows.sort_values("epoch")
                ax.plot(rows["epoch"], rows[column], marker="o", markersize=3, color=color)
        ax.set_xlabel("epoch")
        ax.set_ylabel("DSB mAP (IoU 0.50-0.95)")
        ax.set_title(f"Validation mAP: {name}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    # One legend for all panels, under them, so that no curve hides behind it.
    labels = []
    for setting in settings:
        first = raw[raw["setting"] == setting].iloc[0]
        labels.append(" ".join(f"{a}={first[a]}" for a in varying) or setting)
    handles = [Line2D([], [], color=c, marker="o", markersize=3) for c in colors]
    width_px = fig.get_figwidth() * DPI
    per_entry_px = 8 * max(map(len, labels)) + 40   # ~8 px a character at font size 8
    fig.legend(handles, labels, loc="outside lower center", fontsize=8,
               ncol=max(1, min(len(labels), int(width_px // per_entry_px))))
    head = " - ".join(t for t in (title, ", ".join(fixed)) if t)
    if head:
        fig.suptitle(head)
    return _save(fig, path)


def save_crossval(path: str | os.PathLike, csv_path: str | os.PathLike) -> str:
    """Per-fold pixel IoU and DSB mAP against epoch, thin line per fold, thick mean.

    CSV columns ``fold, epoch, pixel_iou, map``. The title gives the mean and standard
    deviation over folds of each fold's last row.
    """
    frame = _read_csv(csv_path, "cross-validation", required=("fold", "epoch", "pixel_iou", "map"))
    frame = frame.dropna(subset=["fold", "epoch"])
    if frame.empty:
        raise InputError(f"{os.fspath(csv_path)}: no rows with a numeric fold and epoch")
    fig, axes = _curve_figure(2)
    folds = sorted(frame["fold"].unique())
    colors = random_colors(len(folds), bright=False)
    finals = frame.sort_values("epoch").groupby("fold").last()
    summary = []
    for ax, column, label in zip(axes, ("pixel_iou", "map"), ("pixel IoU", "DSB mAP")):
        for color, fold in zip(colors, folds):
            rows = frame[frame["fold"] == fold].sort_values("epoch")
            ax.plot(rows["epoch"], rows[column], color=color, linewidth=1, alpha=0.8,
                    marker=".", label=f"fold {fold:g}")
        mean = frame.groupby("epoch")[column].mean()
        ax.plot(mean.index, mean.values, color="black", linewidth=2.5,
                label=f"mean of {len(folds)} folds")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        summary.append(f"{label} {finals[column].mean():.3f} ± {finals[column].std(ddof=0):.3f}")
    fig.suptitle(f"{len(folds)}-fold cross-validation, last epoch: " + ", ".join(summary))
    return _save(fig, path)
