from __future__ import annotations

import os
import random

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import skimage.io  # noqa: E402
from skimage.draw import disk  # noqa: E402

from mrcnn import utils, visualize  # noqa: E402

CLASS_NAMES = ["BG", "nucleus"]


def _scene(h: int = 64, w: int = 64) -> tuple[np.ndarray, np.ndarray]:
    image = np.full((h, w, 3), 40, np.uint8)
    masks = np.zeros((h, w, 3), bool)
    for i, (cy, cx, r) in enumerate([(15, 15, 6), (40, 45, 9), (52, 14, 5)]):
        rr, cc = disk((cy, cx), r, shape=(h, w))
        masks[rr, cc, i] = True
    return image, masks


def _read_png(path: str) -> np.ndarray:
    assert os.path.getsize(path) > 0
    picture = skimage.io.imread(path)
    assert picture.ndim == 3 and picture.shape[2] in (3, 4)
    return picture


@pytest.fixture(autouse=True)
def _no_open_figures():
    plt.close("all")
    yield
    # Saved figures are built without pyplot: nothing may pile up in its registry.
    assert plt.get_fignums() == []


# ----------------------------------------------------------------------------- colours, masks
def test_random_colors_are_deterministic_distinct_and_leave_global_state_alone():
    py_state, np_state = random.getstate(), np.random.get_state()
    first = visualize.random_colors(12)
    assert first == visualize.random_colors(12)
    assert random.getstate() == py_state
    assert np.array_equal(np.random.get_state()[1], np_state[1])
    assert len(set(first)) == 12
    assert all(0 <= c <= 1 for color in first for c in color)
    dim = visualize.random_colors(12, bright=False)
    assert max(max(c) for c in dim) == pytest.approx(0.7)
    assert visualize.random_colors(0) == []


def test_apply_mask_blends_only_masked_pixels():
    image = np.full((4, 4, 3), 100.0)
    mask = np.zeros((4, 4), bool)
    mask[1, 2] = True
    out = visualize.apply_mask(image, mask, (1.0, 0.0, 0.0), alpha=0.5)
    assert out is image  # in place, as matterport's
    assert np.allclose(out[1, 2], [0.5 * 100 + 0.5 * 255, 50, 50])
    assert np.allclose(np.delete(out.reshape(-1, 3), 1 * 4 + 2, axis=0), 100)
    with pytest.raises(ValueError, match="does not match"):
        visualize.apply_mask(image, np.zeros((3, 3), bool), (1, 0, 0))


def test_mask_outlines_surround_the_mask_in_xy_image_coordinates():
    mask = np.zeros((10, 12), bool)
    mask[2:6, 3:8] = True  # rows 2..5, columns 3..7
    (outline,) = visualize.mask_outlines(mask)
    assert outline[:, 0].min() == pytest.approx(2.5) and outline[:, 0].max() == pytest.approx(7.5)
    assert outline[:, 1].min() == pytest.approx(1.5) and outline[:, 1].max() == pytest.approx(5.5)
    edge = np.zeros((5, 5), bool)
    edge[:2, :2] = True  # touches the border: still one closed outline
    (closed,) = visualize.mask_outlines(edge)
    assert np.allclose(closed[0], closed[-1])
    assert visualize.mask_outlines(np.zeros((5, 5), bool)) == []


# ----------------------------------------------------------------------------- display_instances
def _non_white_share(path) -> float:
    picture = _read_png(str(path))[..., :3]
    return float((picture < 200).any(axis=-1).mean())


def test_display_instances_without_ax_draws_on_pyplot_so_savefig_keeps_it(tmp_path, monkeypatch):
    # matterport's samples/nucleus/nucleus.py detect, on a headless machine (Agg).
    monkeypatch.chdir(tmp_path)
    image, masks = _scene()
    result = visualize.display_instances(image, utils.extract_bboxes(masks), masks,
                                         np.ones(3, int), CLASS_NAMES, [0.9, 0.8, 0.7],
                                         show_bbox=False, show_mask=False, title="Predictions",
                                         figsize=(3, 3))
    assert result is None
    assert plt.get_fignums() == [plt.gcf().number] and len(plt.gca().images) == 1
    plt.savefig("prediction.png")
    assert os.listdir(tmp_path) == ["prediction.png"]  # nothing written unasked
    assert _non_white_share(tmp_path / "prediction.png") > 0.3  # the dark image, not a blank
    plt.close("all")


def test_grid_and_box_pictures_without_save_path_are_pyplots_current_figure(tmp_path,
                                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    image, masks = _scene()
    boxes = utils.extract_bboxes(masks)
    calls = {
        "images": lambda: visualize.display_images([image, masks[..., 0]], cols=2),
        "top": lambda: visualize.display_top_masks(image, masks, [1, 1, 1], CLASS_NAMES),
        "boxes": lambda: visualize.draw_boxes(image, boxes=boxes, refined_boxes=boxes + 1),
    }
    for name, call in calls.items():
        assert call() is None
        plt.savefig(f"{name}.png")
        plt.close("all")
        assert _non_white_share(tmp_path / f"{name}.png") > 0.05, name
    assert sorted(os.listdir(tmp_path)) == ["boxes.png", "images.png", "top.png"]


def test_saved_pngs_get_the_usual_permissions(tmp_path):
    image, masks = _scene()
    previous = os.umask(0o027)
    try:
        path = visualize.display_images([image], save_path=tmp_path / "new.png")
        assert os.stat(path).st_mode & 0o777 == 0o640  # 0o666 less the umask, not 0o600
        old = tmp_path / "old.png"
        old.write_bytes(b"")
        os.chmod(old, 0o664)
        visualize.display_images([image], save_path=old)
        assert os.stat(old).st_mode & 0o777 == 0o664  # a replaced file keeps its bits
        _read_png(str(old))
    finally:
        os.umask(previous)
    assert sorted(os.listdir(tmp_path)) == ["new.png", "old.png"]  # no temporary file left


def test_display_instances_colours_masks_and_honours_save_path(tmp_path):
    image = np.zeros((32, 32, 3), np.uint8)
    masks = np.zeros((32, 32, 1), bool)
    masks[4:28, 4:28, 0] = True
    target = tmp_path / "sub" / "red.png"
    path = visualize.display_instances(image, None, masks, [1], CLASS_NAMES,
                                       colors=[(1.0, 0.0, 0.0)], captions=[""],
                                       show_bbox=False, figsize=(2, 2), save_path=target)
    assert path == str(target)
    picture = _read_png(path)[..., :3].astype(int)
    reddish = (picture[..., 0] > 100) & (picture[..., 1] < 40) & (picture[..., 2] < 40)
    assert reddish.sum() > 0.1 * picture.shape[0] * picture.shape[1]


def test_display_instances_shows_when_interactive(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    shown = []
    monkeypatch.setattr(visualize, "_is_interactive", lambda: True)
    monkeypatch.setattr(plt, "show", lambda *a, **k: shown.append(True))
    image, masks = _scene()
    result = visualize.display_instances(image, None, masks, np.ones(3, int), CLASS_NAMES,
                                         figsize=(2, 2))
    assert result is None and shown == [True] and os.listdir(tmp_path) == []
    plt.close("all")


def test_display_instances_on_callers_axes_neither_saves_nor_closes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    image, masks = _scene()
    fig, ax = plt.subplots(figsize=(2, 2))
    assert visualize.display_instances(image, None, masks, np.ones(3, int), CLASS_NAMES,
                                       ax=ax) is None
    assert os.listdir(tmp_path) == [] and plt.fignum_exists(fig.number)
    assert len(ax.images) == 1
    path = visualize.display_instances(image, None, masks, np.ones(3, int), CLASS_NAMES, ax=ax,
                                       save_path="mine.png")
    assert path == "mine.png" and plt.fignum_exists(fig.number)
    plt.close(fig)


def test_display_instances_rejects_inconsistent_counts(tmp_path):
    image, masks = _scene()
    with pytest.raises(ValueError, match="2 class ids"):
        visualize.display_instances(image, None, masks, [1, 1], CLASS_NAMES,
                                    save_path=tmp_path / "x.png")
    with pytest.raises(ValueError, match="scores"):
        visualize.display_instances(image, None, masks, [1, 1, 1], CLASS_NAMES, scores=[0.5],
                                    save_path=tmp_path / "x.png")


# ----------------------------------------------------------------------------- the others
def test_grid_and_box_pictures_are_written(tmp_path):
    image, masks = _scene()
    boxes = utils.extract_bboxes(masks)
    path = visualize.display_images([image, image[..., 0], masks[..., 0]], titles=["a", "b", "c"],
                                    cols=2, save_path=tmp_path / "grid.png")
    _read_png(path)
    path = visualize.display_top_masks(image, masks, [1, 1, 1], CLASS_NAMES, limit=2,
                                       save_path=tmp_path / "top.png")
    _read_png(path)
    path = visualize.draw_boxes(image, boxes=boxes, refined_boxes=boxes + 2, masks=masks,
                                captions=["a", "b", "c"], visibilities=[0, 1, 2],
                                save_path=tmp_path / "boxes.png")
    _read_png(path)
    with pytest.raises(ValueError, match="refined"):
        visualize.draw_boxes(image, boxes=boxes, refined_boxes=boxes[:2])


def test_evaluation_pictures_are_written(tmp_path):
    image, gt = _scene()
    boxes = utils.extract_bboxes(gt)
    pred = np.roll(gt, 1, axis=1)
    pred_boxes = utils.extract_bboxes(pred)
    ap, precisions, recalls, overlaps = utils.compute_ap(
        boxes, np.ones(3), gt, pred_boxes, np.ones(3), np.array([0.9, 0.6, 0.8]), pred)
    _read_png(visualize.plot_precision_recall(ap, precisions, recalls,
                                              save_path=tmp_path / "pr.png"))
    _read_png(visualize.plot_overlaps(np.ones(3, int), np.ones(3, int), [0.9, 0.8, 0.6],
                                      overlaps, CLASS_NAMES, save_path=tmp_path / "ov.png"))
    with pytest.raises(ValueError, match="overlaps has shape"):
        visualize.plot_overlaps([1], [1, 1], [0.9, 0.8], overlaps, CLASS_NAMES)


def test_display_differences_draws_truth_green_and_predictions_red(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    image = np.zeros((48, 48, 3), np.uint8)
    gt = np.zeros((48, 48, 1), bool)
    gt[4:20, 4:20, 0] = True
    pred = np.zeros((48, 48, 1), bool)
    pred[28:44, 28:44, 0] = True  # a miss and a false detection, far apart
    path = visualize.display_differences(
        image, utils.extract_bboxes(gt), np.array([1]), gt, utils.extract_bboxes(pred),
        np.array([1]), np.array([0.9]), pred, CLASS_NAMES, show_box=False,
        save_path="differences.png")
    assert path == "differences.png" and os.listdir(tmp_path) == ["differences.png"]
    picture = _read_png(path)[..., :3].astype(int)
    r, g, b = picture[..., 0], picture[..., 1], picture[..., 2]
    assert ((g > 80) & (r < 40) & (b < 40)).sum() > 1000
    assert ((r > 100) & (g < 40) & (b < 40)).sum() > 1000


def test_display_weight_stats_lists_every_keras_weight():
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense_a"),
                              keras.layers.Dense(1, name="dense_b")])
    model.get_layer("dense_b").set_weights([np.full((2, 1), 5000.0), np.zeros(1)])
    rows = visualize.weight_stats(model)
    assert [r[1] for r in rows] == ["(3, 2)", "(2,)", "(2, 1)", "(1,)"]
    assert rows[2][2] == rows[2][3] == 5000.0 and rows[2][4] == 0.0
    table = visualize.display_weight_stats(model, verbose=False)
    lines = table.splitlines()
    assert lines[0].split() == ["WEIGHT", "NAME", "SHAPE", "MIN", "MAX", "STD"]
    assert len(lines) == 5
    assert "dense_b" in lines[3] and lines[3].endswith("***")  # huge and constant: flagged
    assert not lines[2].endswith("***")  # a zero bias is normal

    class Facade:  # matterport passed its MaskRCNN wrapper
        keras_model = model

    assert visualize.weight_stats(Facade()) == rows
