from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import skimage.io

from nucleus.errors import InputError
from nucleus.scoring import plots

LOSSES = ["loss", "rpn_class_loss", "rpn_bbox_loss", "mrcnn_class_loss", "mrcnn_bbox_loss",
          "mrcnn_mask_loss"]


def _read_png(path: str) -> np.ndarray:
    assert os.path.getsize(path) > 0
    picture = skimage.io.imread(path)
    assert picture.ndim == 3 and picture.shape[2] in (3, 4)
    return picture[..., :3].astype(int)


def _square(shape, y0, x0, size) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[y0:y0 + size, x0:x0 + size] = True
    return mask


def _case(h: int = 64, w: int = 64):
    """Grey image; truths: one found (TP) and one missed (FN); predictions: the TP and a FP."""
    image = np.full((h, w, 3), 128, np.uint8)
    tp = _square((h, w), 4, 4, 16)
    fn = _square((h, w), 40, 4, 16)
    fp = _square((h, w), 24, 40, 16)
    return image, np.stack([tp, fn], -1), np.stack([tp, fp], -1)


def _only_png(folder) -> None:
    leftovers = [n for n in os.listdir(folder) if n.startswith(".") or n.endswith(".tmp")]
    assert leftovers == [], f"temporary files left behind: {leftovers}"


# ----------------------------------------------------------------------------- layout
def test_panel_layout_upscales_small_images_and_keeps_large_ones():
    small = plots.panel_layout((64, 128), 2, min_width=512, header=30, footer=20, margin=10)
    assert (small.panel_width, small.panel_height, small.scale) == (512, 256, 4.0)
    assert small.lefts == (10, 532) and small.width == 1054 and small.height == 30 + 256 + 20
    assert small.to_pixel(1, 0, 0) == (32, 534)  # centre of image pixel (0, 0), panel 1
    large = plots.panel_layout((600, 900), 1, min_width=512, margin=0)
    assert (large.width, large.height, large.scale) == (900, 600, 1.0)


# ----------------------------------------------------------------------------- pictures
def test_save_overlay_upscales_small_images_and_colours_each_nucleus(tmp_path):
    image, gt, _ = _case()
    path = plots.save_overlay(tmp_path / "overlay.png", image, gt, scores=[0.91, 0.5])
    assert path == str(tmp_path / "overlay.png")
    picture = _read_png(path)
    assert picture.shape == (768, 768, 3)
    layout = plots.panel_layout(image.shape, 1, min_width=plots.OVERLAY_MIN_WIDTH, margin=0)
    background = picture[layout.to_pixel(0, 30, 40)]
    assert np.abs(background - 128).max() <= 2  # untouched grey
    # Centres carry the score text, so look a bit off-centre.
    first, second = picture[layout.to_pixel(0, 7, 7)], picture[layout.to_pixel(0, 43, 7)]
    assert np.ptp(first) > 40 and np.ptp(second) > 40  # tinted, no longer grey
    assert np.abs(first - second).max() > 40  # in different colours
    _only_png(tmp_path)


def test_save_overlay_keeps_native_resolution_of_large_images(tmp_path):
    image = np.zeros((300, 900), np.uint8)  # grey input is fine too
    labels = np.zeros((300, 900), np.int32)
    labels[10:50, 10:50] = 7  # a label image instead of a stack
    picture = _read_png(plots.save_overlay(tmp_path / "big.png", image, labels))
    assert picture.shape == (300, 900, 3)
    assert np.ptp(picture[30, 20]) > 40


def test_save_overlay_rejects_bad_input_naming_the_file(tmp_path):
    image, gt, _ = _case()
    with pytest.raises(InputError, match="bad.png.*32x32 but the image is 64x64"):
        plots.save_overlay(tmp_path / "bad.png", image, gt[:32, :32])
    with pytest.raises(InputError, match="2 masks but 3 scores"):
        plots.save_overlay(tmp_path / "bad.png", image, gt, scores=[1, 2, 3])
    with pytest.raises(InputError, match="label image"):
        plots.save_overlay(tmp_path / "bad.png", image, gt[..., 0])
    assert os.listdir(tmp_path) == []


def test_evaluate_counts_and_scores_like_the_dsb_metric():
    _, gt, pred = _case()
    result = plots.evaluate(gt, pred)
    assert result.counts == (1, 1, 1)
    assert list(result.tp_gt) == [True, False] and list(result.tp_pred) == [True, False]
    assert result.dsb_score == pytest.approx(1 / 3)  # TP / (TP + FP + FN) at every threshold


def test_save_evaluation_colours_tp_fp_fn_where_they_are(tmp_path):
    image, gt, pred = _case()
    path = plots.save_evaluation(tmp_path / "eval.png", image, gt, pred, scores=[0.9, 0.8],
                                 title="img-1")
    picture = _read_png(path)
    layout = plots.panel_layout(image.shape, 2, header=plots.TITLE_PX + plots.PANEL_TITLE_PX,
                                footer=plots.LEGEND_PX)
    assert picture.shape[:2] == (layout.height, layout.width)

    def is_green(p):
        return p[1] > p[0] + 40 and p[1] > p[2] + 40

    def is_red(p):
        return p[0] > p[1] + 40 and p[0] > p[2] + 40

    def is_orange(p):
        return p[0] > p[2] + 60 and p[1] > p[2] + 20 and p[0] > p[1] + 20

    # Off the centre a little: the right panel writes the scores at the centres.
    assert is_green(picture[layout.to_pixel(0, 8, 8)])     # truth that was found
    assert is_orange(picture[layout.to_pixel(0, 44, 8)])   # truth that was missed
    assert is_green(picture[layout.to_pixel(1, 8, 8)])     # matching prediction
    assert is_red(picture[layout.to_pixel(1, 28, 44)])     # false positive
    fn_inside = picture[layout.to_pixel(1, 44, 8)]         # missed truth: outline only
    assert np.abs(fn_inside - 128).max() <= 2
    assert np.abs(picture[layout.to_pixel(0, 28, 44)] - 128).max() <= 2  # no truth there
    _only_png(tmp_path)


def test_save_evaluation_handles_no_prediction_and_overlapping_predictions(tmp_path):
    image, gt, pred = _case()
    empty = np.zeros(gt.shape[:2] + (0,), bool)
    _read_png(plots.save_evaluation(tmp_path / "none.png", image, gt, empty))
    overlapping = np.concatenate([pred, pred[..., :1]], axis=-1)  # a duplicate detection
    result = plots.evaluate(gt, overlapping)
    assert result.counts == (1, 2, 1)
    _read_png(plots.save_evaluation(tmp_path / "dup.png", image, gt, overlapping))
    with_empty = np.concatenate([pred, np.zeros((64, 64, 1), bool)], axis=-1)
    # An empty mask (and its score) is dropped, as the metric ignores it.
    _read_png(plots.save_evaluation(tmp_path / "empty.png", image, gt, with_empty,
                                    scores=[0.9, 0.8, 0.1]))
    with pytest.raises(InputError, match="3 masks but 2 scores"):
        plots.save_evaluation(tmp_path / "x.png", image, gt, with_empty, scores=[0.9, 0.8])


def test_save_comparison_puts_panels_side_by_side(tmp_path):
    image, gt, pred = _case()
    panels = {"Ground truth": gt, "FCN-8s": pred, "Mask R-CNN": gt[..., :1]}
    path = plots.save_comparison(tmp_path / "cmp.png", image, panels, reference="Ground truth")
    picture = _read_png(path)
    layout = plots.panel_layout(image.shape, 3, header=plots.PANEL_TITLE_PX + 6)
    assert picture.shape[:2] == (layout.height, layout.width)
    grey = [np.abs(picture[layout.to_pixel(k, 44, 8)] - 128).max() <= 2 for k in range(3)]
    assert grey == [False, True, True]  # the missed nucleus is only in the ground truth
    assert np.ptp(picture[layout.to_pixel(1, 28, 44)]) > 40  # FCN's false positive
    with pytest.raises(InputError, match="reference panel 'GT'"):
        plots.save_comparison(tmp_path / "x.png", image, panels, reference="GT")
    with pytest.raises(InputError, match="no panels"):
        plots.save_comparison(tmp_path / "x.png", image, {})
    with_image = _read_png(plots.save_comparison(tmp_path / "cmp2.png", image, panels,
                                                 include_image=True))
    assert with_image.shape[1] == plots.panel_layout(image.shape, 4).width


# ----------------------------------------------------------------------------- curves
def _history(path, epochs: int, columns=LOSSES, start: int = 0) -> str:
    epoch = np.arange(start, start + epochs)
    data = {"epoch": epoch}
    for k, c in enumerate(columns):
        data[c] = (1 + k) * np.exp(-epoch / 5)
        data[f"val_{c}"] = data[c] * 1.1
    pd.DataFrame(data).to_csv(path, index=False)
    return str(path)


def _map_csv(path) -> str:
    pd.DataFrame({"epoch": [0, 5, 10], "map": [0.1, 0.4, 0.35],
                  "hours": [0.5, 2.5, 4.5]}).to_csv(path, index=False)
    return str(path)


def test_save_training_curves_with_stages_and_map(tmp_path):
    stages = [_history(tmp_path / "heads.csv", 4), _history(tmp_path / "all.csv", 6)]
    full = _read_png(plots.save_training_curves(tmp_path / "curves.png", stages,
                                                _map_csv(tmp_path / "map.csv")))
    only_loss = _read_png(plots.save_training_curves(
        tmp_path / "loss.png", _history(tmp_path / "loss.csv", 5, columns=["loss"])))
    # Three panels (total, components, mAP) against one.
    assert full.shape[1] > 2.5 * only_loss.shape[1]
    assert only_loss.shape[0] == full.shape[0]


def test_load_histories_shifts_a_stage_that_restarts_at_epoch_zero(tmp_path):
    first = _history(tmp_path / "a.csv", 3)
    second = _history(tmp_path / "b.csv", 2)
    history, losses, starts = plots.load_training_history([first, second])
    assert list(history["epoch"]) == [1, 2, 3, 4, 5] and starts == [4.0]  # completed epochs
    assert losses == LOSSES


def test_curve_inputs_give_clear_errors(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("epoch,loss\n")
    (tmp_path / "noloss.csv").write_text("epoch,acc\n0,0.5\n")
    cases = [
        (lambda: plots.save_training_curves(tmp_path / "o.png", str(tmp_path / "missing.csv")),
         "missing.csv: training history file not found"),
        (lambda: plots.save_training_curves(tmp_path / "o.png", str(tmp_path / "empty.csv")),
         "empty.csv: training history file is empty"),
        (lambda: plots.save_training_curves(tmp_path / "o.png", str(tmp_path / "header.csv")),
         "header.csv: training history file has a header but no rows"),
        (lambda: plots.save_training_curves(tmp_path / "o.png", str(tmp_path / "noloss.csv")),
         "noloss.csv: no loss columns"),
        (lambda: plots.save_training_curves(tmp_path / "o.png", []), "no training history"),
        (lambda: plots.save_map_curve(tmp_path / "o.png", str(tmp_path / "noloss.csv")),
         r"noloss.csv: validation mAP file lacks column\(s\) \['map'\]"),
        (lambda: plots.save_crossval(tmp_path / "o.png", str(tmp_path / "noloss.csv")),
         "lacks column"),
    ]
    for call, message in cases:
        with pytest.raises(InputError, match=message):
            call()
    assert not (tmp_path / "o.png").exists()


def test_save_map_curve_against_epochs_or_hours(tmp_path):
    csv = _map_csv(tmp_path / "map.csv")
    _read_png(plots.save_map_curve(tmp_path / "epochs.png", csv))
    _read_png(plots.save_map_curve(tmp_path / "hours.png", csv, x="hours"))
    pd.DataFrame({"epoch": [1], "map": [0.2]}).to_csv(tmp_path / "nohours.csv", index=False)
    with pytest.raises(InputError, match=r"nohours.csv.*\['hours'\]"):
        plots.save_map_curve(tmp_path / "x.png", str(tmp_path / "nohours.csv"), x="hours")
    with pytest.raises(InputError, match="'epoch' or 'hours'"):
        plots.save_map_curve(tmp_path / "x.png", csv, x="steps")


def _has_colour(picture: np.ndarray, rgb: tuple[int, int, int]) -> bool:
    return bool((np.abs(picture - np.array(rgb)).sum(axis=-1) < 12).any())


def test_map_curves_by_image_kind(tmp_path):
    from matplotlib.colors import to_rgb

    from nucleus.kinds import KINDS

    assert set(plots.KIND_COLORS) == set(KINDS)
    red = tuple(int(round(255 * c)) for c in to_rgb(plots.KIND_COLORS["colour"]))
    plain = _read_png(plots.save_map_curve(tmp_path / "plain.png", _map_csv(tmp_path / "m.csv")))
    assert not _has_colour(plain, red)
    # Per-kind columns (empty cells on rows from before they existed) add their curves.
    pd.DataFrame({"epoch": [5, 15, 25], "map": [0.1, 0.4, 0.35],
                  "map_fluorescence": [None, 0.45, 0.4], "map_brightfield": [None, None, None],
                  "map_colour": [None, 0.1, 0.2]}).to_csv(tmp_path / "kinds.csv", index=False)
    kinds = _read_png(plots.save_map_curve(tmp_path / "kinds.png", str(tmp_path / "kinds.csv")))
    assert _has_colour(kinds, red)
    history = _history(tmp_path / "h.csv", 3)
    curves = _read_png(plots.save_training_curves(tmp_path / "curves.png", history,
                                                  str(tmp_path / "kinds.csv")))
    assert _has_colour(curves, red)


def test_save_crossval_draws_every_fold(tmp_path):
    rows = [dict(fold=f, epoch=e, pixel_iou=0.7 + 0.01 * e, map=0.3 + 0.02 * e - 0.01 * f)
            for f in range(3) for e in range(1, 6)]
    pd.DataFrame(rows).to_csv(tmp_path / "cv.csv", index=False)
    picture = _read_png(plots.save_crossval(tmp_path / "cv.png", str(tmp_path / "cv.csv")))
    assert picture.shape[1] > picture.shape[0]  # two panels side by side
    # The thick black mean line is there.
    assert ((picture.max(axis=2) < 30)).sum() > 500
    _only_png(tmp_path)
