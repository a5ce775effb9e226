"""Pictures of images, boxes, masks and evaluation results (matterport's ``visualize`` names).

Without ``save_path`` a function draws as matterport's did: on the caller's ``ax``, or on a
new pyplot figure that stays pyplot's current figure, shown when the backend can show it (a
notebook, a window). So matterport's ``display_instances(...); plt.savefig(path)`` saves the
picture on a headless machine too, and nothing is written that the caller did not ask for.
With ``save_path`` the picture is written there as a PNG, atomically, and the path returned;
without ``ax`` such a figure is built outside pyplot, so pictures saved in a loop do not pile
up in pyplot's figure registry. This project's own commands always pass ``save_path``.
"""
from __future__ import annotations

import colorsys
import os
from typing import Any, Sequence

import matplotlib
import numpy as np
from matplotlib import lines, patches
from matplotlib.backends import BackendFilter, backend_registry
from matplotlib.figure import Figure
from skimage.measure import find_contours

from mrcnn import utils
from mrcnn.files import atomic_path

# Hue step of the golden ratio: consecutive colours are far apart on the colour wheel and the
# sequence never repeats, so colour i is the same whatever N is.
_GOLDEN = 0.6180339887498949


# ----------------------------------------------------------------------------- colours, masks
def random_colors(N: int, bright: bool = True) -> list[tuple[float, float, float]]:
    """N distinct RGB colours in [0, 1], always the same for the same N.

    Unlike matterport's version this does not shuffle with the global ``random`` module, so
    pictures are reproducible and callers' random state is left alone.
    """
    if N < 0:
        raise ValueError(f"random_colors: N must be >= 0, got {N}")
    value = 1.0 if bright else 0.7
    return [colorsys.hsv_to_rgb((i * _GOLDEN) % 1.0, 1.0, value) for i in range(int(N))]


def apply_mask(image: np.ndarray, mask: np.ndarray, color: Sequence[float],
               alpha: float = 0.5) -> np.ndarray:
    """Blend ``color`` (RGB in [0, 1]) into ``image`` (0-255 scale) where ``mask`` is set.

    Works in place and returns the image, as matterport's did; pass a float copy to keep the
    original and to avoid uint8 rounding.
    """
    mask = np.asarray(mask).astype(bool)
    if mask.shape != image.shape[:2]:
        raise ValueError(f"apply_mask: mask shape {mask.shape} does not match image "
                         f"shape {image.shape[:2]}")
    for c in range(3):
        channel = image[:, :, c]
        channel[mask] = channel[mask] * (1 - alpha) + alpha * color[c] * 255
    return image


def mask_outlines(mask: np.ndarray) -> list[np.ndarray]:
    """Outline polygons of a 2-D mask as arrays of (x, y) points in image coordinates.

    The mask is cropped to its bounding box (plus a one-pixel frame so that objects touching
    the border are closed) before tracing: tracing hundreds of nuclei on the full image
    would cost a full-image scan each.
    """
    mask = np.asarray(mask).astype(bool)
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return []
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = np.pad(mask[y0:y1, x0:x1], 1).astype(np.float32)
    # find_contours returns (row, col); shift back by the crop origin and the frame.
    return [np.stack([c[:, 1] + x0 - 1, c[:, 0] + y0 - 1], axis=1)
            for c in find_contours(crop, 0.5)]


# ----------------------------------------------------------------------------- figure plumbing
def _is_interactive() -> bool:
    """True when matplotlib's backend can show a window or notebook output."""
    backend = matplotlib.get_backend().lower()
    return backend not in backend_registry.list_builtin(BackendFilter.NON_INTERACTIVE)


def save_figure(fig: Figure, path: str | os.PathLike, dpi: float | None = None) -> str:
    """Write ``fig`` as a PNG atomically (temp file in the same folder, then rename).

    The PNG is cropped to what is drawn, so a square image in a 16 x 16 inch figure does not
    come with a wide white frame. It gets the usual umask-based permissions.
    """
    path = os.fspath(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi if dpi is not None else "figure",
                    bbox_inches="tight", pad_inches=0.1)
    return path


class _Canvas:
    """Where one call draws, and what it does with the picture once drawn.

    With ``save_path`` the picture goes to that file (on a figure of its own, outside pyplot,
    unless the caller gave ``ax``). Without it the drawing goes where matterport's did: onto
    the caller's ``ax``, or onto a new pyplot figure that stays current, so a following
    ``plt.savefig`` saves it, and that is shown when the backend can show anything.
    """

    def __init__(self, save_path: str | os.PathLike | None, ax: Any = None,
                 figsize: tuple[float, float] = (16, 16), nrows: int = 1, ncols: int = 1):
        self.own = ax is None
        self.path = os.fspath(save_path) if save_path is not None else None
        if not self.own:
            self.fig, self.axes = ax.figure, np.array([[ax]])
        elif self.path is not None:
            self.fig = Figure(figsize=figsize)
            self.axes = np.asarray(self.fig.subplots(nrows, ncols, squeeze=False))
        else:
            # here: pyplot (~0.3 s) picks a GUI backend; figures saved to files never need it
            import matplotlib.pyplot as plt
            self.fig, self.axes = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False)

    @property
    def ax(self):
        return self.axes[0, 0]

    def finish(self) -> str | None:
        if self.path is not None:
            return save_figure(self.fig, self.path)
        if self.own and _is_interactive():  # Agg would only warn that it cannot show
            import matplotlib.pyplot as plt   # here: see __init__
            plt.show()
        return None


def _check_count(name: str, n: int, value: Any, what: str) -> None:
    if value is not None and len(value) != n:
        raise ValueError(f"{name}: got {n} instances but {len(value)} {what}")


# ----------------------------------------------------------------------------- instances
def display_instances(image: np.ndarray, boxes: np.ndarray | None, masks: np.ndarray | None,
                      class_ids: Sequence[int], class_names: Sequence[str],
                      scores: Sequence[float] | None = None, title: str = "",
                      figsize: tuple[float, float] = (16, 16), ax: Any = None,
                      show_mask: bool = True, show_bbox: bool = True,
                      colors: Sequence[Sequence[float]] | None = None,
                      captions: Sequence[str] | None = None,
                      save_path: str | os.PathLike | None = None) -> str | None:
    """Draw detections: dashed boxes, "class score" captions, filled masks and their outlines.

    ``boxes`` [N, (y1, x1, y2, x2)] may be None when masks are given (boxes are then the
    masks' extents); ``masks`` is [H, W, N].  Returns ``save_path`` when given, else None
    (see the module docstring).
    """
    class_ids = np.asarray(class_ids).reshape(-1)
    n = len(class_ids)
    if masks is not None and np.asarray(masks).shape[-1] != n:
        raise ValueError(f"display_instances: {n} class ids but masks have shape "
                         f"{np.asarray(masks).shape} (expected [H, W, {n}])")
    if boxes is None:
        boxes = utils.extract_bboxes(masks) if masks is not None else np.zeros((n, 4), int)
    boxes = np.asarray(boxes).reshape(-1, 4)
    if len(boxes) != n:
        raise ValueError(f"display_instances: {len(boxes)} boxes but {n} class ids")
    for value, what in ((scores, "scores"), (colors, "colors"), (captions, "captions")):
        _check_count("display_instances", n, value, what)

    canvas = _Canvas(save_path, ax=ax, figsize=figsize)
    ax = canvas.ax
    rgb = utils.to_rgb_uint8(image)
    height, width = rgb.shape[:2]
    colors = list(colors) if colors is not None else random_colors(n)
    canvas_image = rgb.astype(np.float32)
    for i in range(n):
        color = colors[i]
        y1, x1, y2, x2 = boxes[i]
        if show_bbox and (y2 > y1 and x2 > x1):
            ax.add_patch(patches.Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1,
                                           linewidth=1.5, linestyle="dashed", alpha=0.8,
                                           edgecolor=color, facecolor="none"))
        if captions is not None:
            caption = captions[i]
        else:
            label = _class_name(class_names, class_ids[i])
            caption = f"{label} {scores[i]:.3f}" if scores is not None else label
        if caption:
            ax.text(x1, y1 - 2, caption, color="white", fontsize=9, va="bottom",
                    bbox=dict(facecolor=color, alpha=0.5, pad=1, edgecolor="none"))
        if masks is not None:
            mask = masks[:, :, i]
            if show_mask:
                apply_mask(canvas_image, mask, color)
            for outline in mask_outlines(mask):
                ax.add_patch(patches.Polygon(outline, closed=True, facecolor="none",
                                             edgecolor=color, linewidth=1))
    ax.imshow(canvas_image.astype(np.uint8), interpolation="nearest")
    ax.set_xlim(-10.5, width + 9.5)
    ax.set_ylim(height + 9.5, -10.5)
    ax.axis("off")
    ax.set_title(title if title else ("" if n else "No instances to display"))
    return canvas.finish()


def _class_name(class_names: Sequence[str], class_id: int) -> str:
    class_id = int(class_id)
    return str(class_names[class_id]) if 0 <= class_id < len(class_names) else str(class_id)


def display_images(images: Sequence[np.ndarray], titles: Sequence[str] | None = None,
                   cols: int = 4, cmap: Any = None, norm: Any = None,
                   interpolation: str | None = None,
                   save_path: str | os.PathLike | None = None) -> str | None:
    """A grid of images with optional titles."""
    images = list(images)
    if not images:
        raise ValueError("display_images: no images given")
    titles = list(titles) if titles is not None else [""] * len(images)
    if len(titles) != len(images):
        raise ValueError(f"display_images: {len(images)} images but {len(titles)} titles")
    cols = max(1, min(int(cols), len(images)))
    rows = -(-len(images) // cols)
    canvas = _Canvas(save_path, figsize=(14, 14 * rows / cols),
                     nrows=rows, ncols=cols)
    for k, ax in enumerate(canvas.axes.ravel()):
        ax.axis("off")
        if k >= len(images):
            continue
        image = np.asarray(images[k])
        if image.ndim == 3 and image.shape[-1] >= 3:
            image = utils.to_rgb_uint8(image)
        ax.set_title(titles[k], fontsize=9)
        ax.imshow(image, cmap=cmap, norm=norm, interpolation=interpolation)
    return canvas.finish()


def display_top_masks(image: np.ndarray, mask: np.ndarray, class_ids: Sequence[int],
                      class_names: Sequence[str], limit: int = 4,
                      save_path: str | os.PathLike | None = None) -> str | None:
    """The image next to the union mask of each of its ``limit`` largest classes."""
    class_ids = np.asarray(class_ids).reshape(-1)
    mask = np.asarray(mask)
    if mask.shape[-1] != len(class_ids):
        raise ValueError(f"display_top_masks: {len(class_ids)} class ids but mask has "
                         f"shape {mask.shape}")
    images, titles = [utils.to_rgb_uint8(image)], ["H x W = {} x {}".format(*mask.shape[:2])]
    unique = np.unique(class_ids)
    area = {c: mask[:, :, class_ids == c].sum() for c in unique}
    top = sorted(unique, key=lambda c: -area[c])[:limit]
    for k in range(limit):
        if k < len(top):
            c = top[k]
            images.append(np.any(mask[:, :, class_ids == c], axis=-1).astype(np.uint8))
            titles.append(_class_name(class_names, c))
        else:
            images.append(np.zeros(mask.shape[:2], np.uint8))
            titles.append("-")
    return display_images(images, titles=titles, cols=limit + 1, cmap="Blues_r",
                          save_path=save_path)


# ----------------------------------------------------------------------------- boxes
def draw_boxes(image: np.ndarray, boxes: np.ndarray | None = None,
               refined_boxes: np.ndarray | None = None, masks: np.ndarray | None = None,
               captions: Sequence[str] | None = None,
               visibilities: Sequence[int] | None = None, title: str = "", ax: Any = None,
               save_path: str | os.PathLike | None = None) -> str | None:
    """Draw anchors or proposals and, optionally, where refinement moved them.

    ``visibilities`` (0, 1 or 2 per box) sets how prominent a box is: 0 faint grey, 1 dotted,
    2 solid; by default boxes are solid alone and dotted next to ``refined_boxes``, which are
    drawn solid with a line from each box's corner to its refined corner.  ``masks``
    [H, W, N] are filled.
    """
    if boxes is None and refined_boxes is None:
        raise ValueError("draw_boxes: give boxes, refined_boxes or both")
    n = len(boxes) if boxes is not None else len(refined_boxes)
    if boxes is not None and refined_boxes is not None and len(refined_boxes) != n:
        raise ValueError(f"draw_boxes: {n} boxes but {len(refined_boxes)} refined boxes")
    _check_count("draw_boxes", n, captions, "captions")
    _check_count("draw_boxes", n, visibilities, "visibilities")
    if masks is not None and np.asarray(masks).shape[-1] != n:
        raise ValueError(f"draw_boxes: {n} boxes but masks have shape {np.asarray(masks).shape}")

    canvas = _Canvas(save_path, ax=ax, figsize=(12, 12))
    ax = canvas.ax
    rgb = utils.to_rgb_uint8(image)
    height, width = rgb.shape[:2]
    colors = random_colors(n)
    canvas_image = rgb.astype(np.float32)
    for i in range(n):
        if visibilities is not None:
            visibility = int(visibilities[i])
        else:  # alone, boxes are the subject; next to refinements they are the "before"
            visibility = 2 if refined_boxes is None else 1
        color = "grey" if visibility == 0 else colors[i]
        if boxes is not None:
            y1, x1, y2, x2 = boxes[i]
            ax.add_patch(patches.Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1,
                                           linewidth=1.5, alpha=0.5 if visibility == 0 else 1,
                                           linestyle="solid" if visibility == 2 else "dotted",
                                           edgecolor=color, facecolor="none"))
        if refined_boxes is not None and visibility > 0:
            ry1, rx1, ry2, rx2 = refined_boxes[i]
            ax.add_patch(patches.Rectangle((rx1 - 0.5, ry1 - 0.5), rx2 - rx1, ry2 - ry1,
                                           linewidth=1.5, edgecolor=color, facecolor="none"))
            if boxes is not None:
                ax.add_line(lines.Line2D([x1, rx1], [y1, ry1], color=color))
        if captions is not None:
            y1c, x1c = (refined_boxes[i] if refined_boxes is not None else boxes[i])[:2]
            ax.text(x1c, y1c - 2, captions[i], color="white", fontsize=9, va="bottom",
                    bbox=dict(facecolor=color, alpha=0.5, pad=1, edgecolor="none"))
        if masks is not None:
            apply_mask(canvas_image, masks[:, :, i], colors[i])
            for outline in mask_outlines(masks[:, :, i]):
                ax.add_patch(patches.Polygon(outline, facecolor="none", edgecolor=colors[i]))
    ax.imshow(canvas_image.astype(np.uint8), interpolation="nearest")
    ax.set_xlim(-10.5, width + 9.5)
    ax.set_ylim(height + 9.5, -10.5)
    ax.axis("off")
    ax.set_title(title)
    return canvas.finish()


# ----------------------------------------------------------------------------- evaluation
def plot_precision_recall(AP: float, precisions: np.ndarray, recalls: np.ndarray,
                          save_path: str | os.PathLike | None = None) -> str | None:
    """Precision against recall from ``utils.compute_ap``."""
    precisions, recalls = np.asarray(precisions), np.asarray(recalls)
    if precisions.shape != recalls.shape:
        raise ValueError(f"plot_precision_recall: {precisions.shape} precisions but "
                         f"{recalls.shape} recalls")
    canvas = _Canvas(save_path, figsize=(6, 5))
    ax = canvas.ax
    ax.step(recalls, precisions, where="post", color="tab:blue")
    ax.set_title(f"Precision-recall curve, AP@50 = {AP:.3f}")
    ax.set_xlabel("Recall")
    ax.set_ylabel("Precision")
    ax.set_xlim(0, 1.05)
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    return canvas.finish()


def plot_overlaps(gt_class_ids: Sequence[int], pred_class_ids: Sequence[int],
                  pred_scores: Sequence[float], overlaps: np.ndarray,
                  class_names: Sequence[str], threshold: float = 0.5,
                  save_path: str | os.PathLike | None = None) -> str | None:
    """IoU grid of predictions (rows) against ground truth (columns).

    Cells above ``threshold`` say "match" when the classes agree and "wrong" otherwise, so a
    confusion between classes stands out next to a plain miss.
    """
    gt_class_ids = np.asarray(gt_class_ids).reshape(-1)
    pred_class_ids = np.asarray(pred_class_ids).reshape(-1)
    pred_scores = np.asarray(pred_scores).reshape(-1)
    overlaps = np.asarray(overlaps, dtype=float)
    if overlaps.size == 0:
        overlaps = np.zeros((len(pred_class_ids), len(gt_class_ids)))
    if overlaps.shape != (len(pred_class_ids), len(gt_class_ids)):
        raise ValueError(f"plot_overlaps: overlaps has shape {overlaps.shape}, expected "
                         f"[{len(pred_class_ids)} predictions, {len(gt_class_ids)} gt]")
    n_pred, n_gt = overlaps.shape
    size = (min(4 + 0.5 * n_gt, 40), min(3 + 0.4 * n_pred, 40))
    canvas = _Canvas(save_path, figsize=size)
    ax = canvas.ax
    image = ax.imshow(overlaps if overlaps.size else np.zeros((1, 1)), cmap="Blues",
                      vmin=0, vmax=1, aspect="auto")
    canvas.fig.colorbar(image, ax=ax, fraction=0.04, label="IoU")
    ax.set_yticks(range(n_pred))
    ax.set_yticklabels([f"{_class_name(class_names, c)} ({s:.2f})"
                        for c, s in zip(pred_class_ids, pred_scores)], fontsize=8)
    ax.set_xticks(range(n_gt))
    ax.set_xticklabels([_class_name(class_names, c) for c in gt_class_ids], rotation=90,
                       fontsize=8)
    if n_pred * n_gt <= 2500:  # beyond that the text is unreadable anyway
        for i in range(n_pred):
            for j in range(n_gt):
                value = overlaps[i, j]
                text = ""
                if value > threshold:
                    text = "match" if pred_class_ids[i] == gt_class_ids[j] else "wrong"
                label = f"{value:.2f}\n{text}" if text else f"{value:.2f}"
                ax.text(j, i, label, ha="center", va="center", fontsize=6,
                        color="white" if value > 0.5 else "black")
    ax.set_xlabel("Ground truth")
    ax.set_ylabel("Predictions and scores")
    ax.set_title(f"Overlaps (IoU > {threshold:g} marked)")
    return canvas.finish()


def display_differences(image: np.ndarray, gt_box: np.ndarray, gt_class_id: np.ndarray,
                        gt_mask: np.ndarray, pred_box: np.ndarray, pred_class_id: np.ndarray,
                        pred_score: np.ndarray, pred_mask: np.ndarray,
                        class_names: Sequence[str], title: str = "", ax: Any = None,
                        show_mask: bool = True, show_box: bool = True,
                        iou_threshold: float = 0.5, score_threshold: float = 0.5,
                        save_path: str | os.PathLike | None = None) -> str | None:
    """Ground truth in green and predictions in red, each prediction captioned "score / IoU".

    Matching uses ``utils.compute_matches``; a prediction's IoU is the one with the truth it
    matched (0 when unmatched).
    """
    gt_match, pred_match, overlaps = utils.compute_matches(
        gt_box, gt_class_id, gt_mask, pred_box, pred_class_id, pred_score, pred_mask,
        iou_threshold=iou_threshold, score_threshold=score_threshold)
    # compute_matches reports predictions sorted by score: use the same order here.
    order = np.argsort(np.asarray(pred_score))[::-1][:len(pred_match)]
    pred_box = np.asarray(pred_box)[order]
    pred_class_id = np.asarray(pred_class_id)[order]
    pred_score = np.asarray(pred_score)[order]
    pred_mask = np.asarray(pred_mask)[..., order]
    n_gt = len(gt_match)
    gt_box, gt_class_id = np.asarray(gt_box)[:n_gt], np.asarray(gt_class_id)[:n_gt]
    gt_mask = np.asarray(gt_mask)[..., :n_gt]
    colors = [(0.0, 0.8, 0.0)] * n_gt + [(1.0, 0.0, 0.0)] * len(pred_match)
    captions = [""] * n_gt + [
        f"{pred_score[i]:.2f} / {overlaps[i, int(j)] if j > -1 else 0.0:.2f}"
        for i, j in enumerate(pred_match)]
    title = title or (f"Ground truth and detections: {int((pred_match > -1).sum())} matched, "
                      f"{int((pred_match == -1).sum())} false, {int((gt_match == -1).sum())} "
                      "missed. Captions: score / IoU")
    return display_instances(
        image,
        boxes=np.concatenate([gt_box.reshape(-1, 4), pred_box.reshape(-1, 4)]),
        masks=np.concatenate([gt_mask.astype(bool), pred_mask.astype(bool)], axis=-1),
        class_ids=np.concatenate([gt_class_id, pred_class_id]), class_names=class_names,
        scores=np.concatenate([np.zeros(n_gt), pred_score]), title=title, ax=ax,
        show_mask=show_mask, show_bbox=show_box, colors=colors, captions=captions,
        save_path=save_path)


# ----------------------------------------------------------------------------- weights
def weight_stats(model: Any) -> list[tuple[str, str, float, float, float]]:
    """(name, shape, min, max, std) of every weight of a Keras model, in layer order.

    Accepts the ``MaskRCNN`` facade too (its ``keras_model`` is used).
    """
    model = getattr(model, "keras_model", model)  # matterport passed its MaskRCNN wrapper
    rows = []
    for layer in model.layers:
        for weight in layer.weights:
            values = np.asarray(weight.numpy() if hasattr(weight, "numpy") else weight)
            name = getattr(weight, "path", None) or getattr(weight, "name", "?")
            if values.size == 0:
                rows.append((name, str(values.shape), float("nan"), float("nan"), float("nan")))
                continue
            rows.append((name, str(tuple(values.shape)), float(values.min()),
                         float(values.max()), float(values.std())))
    return rows


def display_weight_stats(model: Any, verbose: bool = True) -> str:
    """A text table of weight statistics, printed and returned.

    A weight whose std is 0 (dead or never initialised, except biases which start at zero)
    or whose magnitude exceeds 1000 (diverged) is flagged with ``***`` because those are what
    one looks for in such a table.
    """
    rows = weight_stats(model)
    header = ("WEIGHT NAME", "SHAPE", "MIN", "MAX", "STD")
    body = []
    for name, shape, lo, hi, std in rows:
        flag = ""
        is_bias = name.endswith("bias") or name.endswith("beta")
        if (std == 0 and not is_bias) or max(abs(lo), abs(hi)) > 1000:
            flag = " ***"
        body.append((name, shape, f"{lo:+.4f}", f"{hi:+.4f}", f"{std:.4f}{flag}"))
    widths = [max(len(r[k]) for r in [header, *body]) for k in range(5)]
    lines = ["  ".join(cell.ljust(widths[k]) for k, cell in enumerate(r)).rstrip()
             for r in [header, *body]]
    table = "\n".join(lines)
    if verbose:
        print(table)
    return table
