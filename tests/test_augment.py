"""Tests for nucleus.training.augment: the study's flip + brightness augmentation."""
from __future__ import annotations

import numpy as np
import pytest

from mrcnn.augmentation import apply_augmentation
from mrcnn.imgaug_compat import ia, iaa
from nucleus.training.augment import build_augmentation


def _scene() -> tuple[np.ndarray, np.ndarray]:
    mask = np.zeros((32, 40, 2), dtype=bool)
    mask[2:8, 3:12, 0] = True
    mask[20:30, 25:31, 1] = True
    image = np.full((32, 40, 3), 40, dtype=np.uint8)
    image[mask.any(-1)] = 120
    return image, mask


def test_everything_off_gives_none():
    assert build_augmentation(flip=False, brightness=None) is None


def test_default_is_flips_and_brightness():
    aug = build_augmentation()
    kinds = [type(a) for a in aug]
    assert kinds == [iaa.Fliplr, iaa.Flipud, iaa.Multiply]


def test_flips_only_and_brightness_only():
    assert [type(a) for a in build_augmentation(brightness=None)] == [iaa.Fliplr, iaa.Flipud]
    assert [type(a) for a in build_augmentation(flip=False)] == [iaa.Multiply]


def test_draws_vary_per_image_and_masks_follow():
    ia.seed(0)
    aug = build_augmentation(brightness=(0.5, 2.0))
    image, mask = _scene()
    variants = {"none": mask, "lr": mask[:, ::-1], "ud": mask[::-1], "both": mask[::-1, ::-1]}
    flips, levels = set(), set()
    for _ in range(40):
        image_aug, mask_aug = apply_augmentation(aug, image, mask)
        seen = [name for name, m in variants.items() if np.array_equal(mask_aug, m)]
        assert len(seen) == 1
        flips.add(seen[0])
        # the bright pixels (nuclei) are exactly where the masks went
        bright = image_aug[..., 0] == image_aug[..., 0].max()
        np.testing.assert_array_equal(bright, mask_aug.any(-1))
        levels.add(int(image_aug[~bright][0, 0]))
    assert flips == set(variants)  # each flip combination drawn
    assert len(levels) > 10  # brightness drawn per image


def test_rotate90_draws_all_eight_orientations_and_masks_follow():
    ia.seed(1)
    aug = build_augmentation(brightness=None, rotate90=True)
    assert [type(a) for a in aug] == [iaa.Fliplr, iaa.Flipud, iaa.Rot90]
    mask = np.zeros((24, 24, 1), dtype=bool)
    mask[2:6, 3:12, 0] = True                      # no symmetry: every orientation differs
    mask[6:9, 3:5, 0] = True
    image = np.where(mask, 200, 10).astype(np.uint8).repeat(3, axis=-1)
    orientations = []
    m = mask
    for _ in range(4):
        orientations += [m, m[:, ::-1]]
        m = np.rot90(m)
    seen = set()
    for _ in range(80):
        image_aug, mask_aug = apply_augmentation(aug, image, mask)
        hits = [i for i, o in enumerate(orientations) if np.array_equal(mask_aug, o)]
        assert len(hits) == 1
        np.testing.assert_array_equal(image_aug[..., 0] == 200, mask_aug[..., 0])
        seen.add(hits[0])
    assert seen == set(range(8))


def test_bad_brightness():
    with pytest.raises(ValueError, match="0 < low <= high"):
        build_augmentation(brightness=(1.5, 0.8))
    with pytest.raises(ValueError, match="pair"):
        build_augmentation(brightness=1.2)  # type: ignore[arg-type]


def test_appearance_changes_pixels_never_masks():
    ia.seed(2)
    aug = build_augmentation(flip=False, brightness=None, appearance=True)
    image, mask = _scene()
    image = image.copy()
    image[..., 1] += 30                            # a coloured image, so colour steps act
    changed = 0
    for _ in range(30):
        image_aug, mask_aug = apply_augmentation(aug, image, mask)
        np.testing.assert_array_equal(mask_aug, mask)
        assert image_aug.dtype == np.uint8 and image_aug.shape == image.shape
        changed += not np.array_equal(image_aug, image)
    assert changed >= 20                           # most draws change the look


def test_jitter_stains_changes_colour_and_keeps_grey_levels_in_range():
    from nucleus.training.augment import jitter_stains

    rng = np.random.default_rng(0)
    image = np.zeros((16, 16, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 60, 20, 70   # inverted purple (H&E)
    out = jitter_stains(image, rng, alpha=0.3, beta=0.05)
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert not np.array_equal(out, image)
    # no jitter at all gives the image back (up to rounding of the round trip)
    same = jitter_stains(image, rng, alpha=0.0, beta=0.0)
    assert np.abs(same.astype(int) - image).max() <= 1
    # a grey image is left alone
    grey = np.zeros((4, 4), np.uint8)
    assert jitter_stains(grey, rng) is grey


def test_scale_step_rescales_image_and_masks_together():
    from nucleus.training.augment import scale_step

    ia.seed(3)
    aug = iaa.Sequential([scale_step((0.5, 2.0), probability=1.0)])
    image = np.zeros((64, 64, 3), np.uint8)
    mask = np.zeros((64, 64, 1), bool)
    mask[24:40, 28:36, 0] = True                   # 16 x 8 block at the centre
    image[mask[..., 0]] = 200
    areas = []
    for _ in range(30):
        image_aug, mask_aug = apply_augmentation(aug, image, mask)
        assert mask_aug.shape == mask.shape
        # the mask follows the bright pixels (up to interpolation at the edge)
        bright = image_aug[..., 0] > 100
        assert np.count_nonzero(bright ^ mask_aug[..., 0]) <= 0.25 * max(1, bright.sum())
        areas.append(int(mask_aug.sum()))
    # factors 0.5-2 scale the 128-pixel block's area by 0.25-4
    assert min(areas) < 100 and max(areas) > 200
    assert all(20 <= a <= 600 for a in areas)


def test_aspect_step_stretches_one_axis_and_masks_follow():
    from nucleus.training.augment import aspect_step

    ia.seed(4)
    aug = iaa.Sequential([aspect_step(1.5, probability=1.0)])
    image = np.zeros((64, 64, 3), np.uint8)
    mask = np.zeros((64, 64, 1), bool)
    mask[24:40, 24:40, 0] = True                   # 16 x 16 square at the centre
    image[mask[..., 0]] = 200
    widths = set()
    for _ in range(30):
        image_aug, mask_aug = apply_augmentation(aug, image, mask)
        rows, cols = np.nonzero(mask_aug[..., 0])
        assert rows.max() - rows.min() + 1 == 16   # y untouched
        width = cols.max() - cols.min() + 1
        assert 16 / 1.5 - 1.5 <= width <= 16 * 1.5 + 1.5
        widths.add(int(width))
        bright = image_aug[..., 0] > 100
        assert np.count_nonzero(bright ^ mask_aug[..., 0]) <= 0.25 * bright.sum()
    assert min(widths) < 14 and max(widths) > 18    # narrower and wider both drawn
    with pytest.raises(ValueError, match="aspect"):
        build_augmentation(aspect=0.8)


def test_scale_range_is_checked():
    with pytest.raises(ValueError, match="scale"):
        build_augmentation(scale=(2.0, 1.0))
    with pytest.raises(ValueError, match="scale"):
        build_augmentation(scale="big")


def _dark_scene(n=6) -> tuple[np.ndarray, np.ndarray]:
    mask = np.zeros((64, 96, n), dtype=bool)
    for k in range(n):
        y, x = 8 + 24 * (k // 3), 8 + 30 * (k % 3)
        mask[y:y + 12, x:x + 14, k] = True
    image = np.full((64, 96, 3), 10, dtype=np.uint8)
    image[mask.any(-1)] = 210
    return image, mask


def test_dim_instances_dims_some_nuclei_and_leaves_the_rest():
    from nucleus.training.augment import dim_instances

    image, mask = _dark_scene()
    out = dim_instances(image, mask, np.random.default_rng(4), fraction=0.5,
                        factor=(0.2, 0.3))
    assert out.dtype == np.uint8 and out.shape == image.shape
    # the whole nucleus, rim included, is dimmed evenly: no bright ring is left
    inner = [out[mask[..., k]].astype(float)[..., 0] for k in range(mask.shape[-1])]
    dimmed = [v.max() < 120 for v in inner]
    assert 0 < sum(dimmed) < len(dimmed)                   # some, not all
    for v, d in zip(inner, dimmed):
        if d:
            assert 10 + 200 * 0.2 - 3 <= v.min() <= v.max() <= 10 + 200 * 0.3 + 3
        else:
            assert v.min() >= 200
    background = ~np.any(mask, -1)
    far = background.copy()
    far[:, :] = False
    far[:, -4:] = True                                     # a column far from every nucleus
    assert (out[far] == 10).all()


def test_dimming_wrapper_keeps_masks_and_skips_light_backgrounds():
    from nucleus.training.augment import WithDimming

    image, mask = _dark_scene()
    built = build_augmentation(flip=False, brightness=None, dim=1.0)
    assert isinstance(built, WithDimming) and built.probability == 1.0
    # Seeded: each of the 6 nuclei is dimmed with chance 0.3, so an unseeded draw leaves all of
    # them alone about one time in nine.
    always = WithDimming(None, 1.0, seed=0)
    out, out_mask = apply_augmentation(always, image, mask)
    assert (out_mask == mask).all()
    assert (out != image).any()
    light = 255 - image
    out, _ = apply_augmentation(always, light, mask)
    assert (out == light).all()
    with pytest.raises(ValueError, match="probability"):
        WithDimming(None, 1.5)


def test_defocus_blurs_only_the_dimmed_nuclei():
    from nucleus.training.augment import dim_instances

    image, mask = _dark_scene()
    sharp = dim_instances(image, mask, np.random.default_rng(4), fraction=0.5,
                          factor=(0.9, 0.9))
    soft = dim_instances(image, mask, np.random.default_rng(4), fraction=0.5,
                         factor=(0.9, 0.9), defocus=3.0)
    assert soft.dtype == np.uint8 and soft.shape == image.shape
    changed = [k for k in range(mask.shape[-1])
               if (sharp[mask[..., k]] != image[mask[..., k]]).any()]
    kept = [k for k in range(mask.shape[-1]) if k not in changed]
    assert changed and kept
    for k in changed:
        # blurred: the nucleus's edge pixels darker than its centre, signal spread outside
        inside = soft[mask[..., k]][..., 0].astype(float)
        assert inside.min() < inside.max() - 20
    for k in kept:                                         # left sharp and bright
        diff = soft[mask[..., k]].astype(int) - image[mask[..., k]]
        assert np.abs(diff).max() <= 2
    with pytest.raises(ValueError, match="defocus"):
        from nucleus.training.augment import WithDimming
        WithDimming(None, 0.5, defocus=-1)


def test_dimming_toward_the_surround_fades_a_nucleus_into_its_cytoplasm():
    from nucleus.training.augment import dim_instances, surround_level

    # tissue as the network sees it (inverted): glass 5, cytoplasm 90, nuclei 210
    image, mask = _dark_scene()
    image[...] = 5
    image[:, :60] = 90
    image[mask.any(-1)] = 210
    level = surround_level(image, mask.any(-1))
    assert abs(level[14, 14, 0] - 90) < 6                  # a nucleus inside the cytoplasm
    out = dim_instances(image, mask, np.random.default_rng(4), fraction=0.5,
                        factor=(0.2, 0.3), toward="surround")
    darkest = dim_instances(image, mask, np.random.default_rng(4), fraction=0.5,
                            factor=(0.2, 0.3))
    dimmed = [k for k in range(mask.shape[-1])
              if out[mask[..., k]][..., 0].max() < 200 and (k % 3) < 2]   # in the cytoplasm
    assert dimmed
    for k in dimmed:
        inside = out[mask[..., k]][..., 0].astype(float)
        # 90 + (210 - 90) * 0.2..0.3: still above the cytoplasm, where the darkest pixels
        # would have taken it below (5 + 205 * 0.2..0.3)
        assert 90 + 120 * 0.2 - 4 <= inside.min() and inside.max() <= 90 + 120 * 0.3 + 4
        assert darkest[mask[..., k]][..., 0].max() < 90
    assert (out[:, 90:] == 5).all()                        # the glass far off is left alone
    with pytest.raises(ValueError, match="toward"):
        dim_instances(image, mask, np.random.default_rng(4), toward="glass")


def test_grey_as_tissue_stains_nuclei_and_keeps_masks():
    from nucleus.kinds import image_kind
    from nucleus.training.augment import stain_grey_as_tissue

    image, mask = _dark_scene()
    inside, outside = mask.any(-1), ~mask.any(-1)
    outputs = [stain_grey_as_tissue(image, np.random.default_rng(seed)) for seed in range(12)]
    for out in outputs:
        assert out.dtype == np.uint8 and out.shape == image.shape
        # tissue as the network sees it: inverted, so the nuclei's haematoxylin is bright
        assert image_kind(255 - out) == "colour"
        assert out[inside].mean() > out[outside].mean() + 10
    assert len({out.tobytes() for out in outputs}) == len(outputs)       # each draw its own
    same = stain_grey_as_tissue(image, np.random.default_rng(3))
    assert np.array_equal(same, outputs[3])                              # one seed, one image
    # colour, light-background and flat crops are left alone
    colour = image.copy()
    colour[..., 0] //= 2
    light = 255 - image
    flat = np.full_like(image, 30)
    for crop in (colour, light, flat):
        assert stain_grey_as_tissue(crop, np.random.default_rng(0)) is crop
    # as a training step: every grey crop redrawn, masks untouched; the share is checked
    augment = build_augmentation(flip=False, brightness=None, tissue=1.0)
    out, out_mask = apply_augmentation(augment, image, mask)
    assert image_kind(255 - out) == "colour" and np.array_equal(out_mask, mask)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        build_augmentation(tissue=1.5)
