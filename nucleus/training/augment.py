"""Training augmentation: the study's flips and brightness, plus appearance and scale jitter.

Each image gets its own draw. The study's augmentation is a left-right flip with probability
1/2, an up-down flip with probability 1/2, and a brightness factor drawn uniformly from
``brightness``. Flips, quarter turns and rescaling are geometric, so
:func:`mrcnn.augmentation.apply_augmentation` applies them to the masks as well; every other
step touches the image only.

``appearance`` and ``scale`` exist for images unlike the training set (other microscopes, stains
and magnifications; README, "How the CPU profile was chosen"). They act on the image as the
network sees it: after ``IMAGE_NORMALIZATION`` (light backgrounds already inverted) and after
the training crop.
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from skimage.color import hed_from_rgb, rgb_from_hed

from mrcnn.augmentation import apply_augmentation
from mrcnn.imgaug_compat import iaa, iap
from nucleus.kinds import image_kind
from nucleus.training.train_options import DIM_TOWARD


def jitter_stains(image: np.ndarray, rng: np.random.Generator, alpha: float = 0.15,
                  beta: float = 0.03, inverted: bool = True) -> np.ndarray:
    """One random change of the haematoxylin, eosin and DAB amounts of a uint8 RGB image.

    The image's optical densities are split into stain amounts with the Ruifrok-Johnston
    matrices (skimage's ``hed_from_rgb`` / ``rgb_from_hed``); each amount is scaled by a factor
    in ``1 +- alpha`` and shifted by up to ``beta``, then recombined. Unlike skimage's
    ``rgb2hed``, negative amounts are kept, so no jitter gives the image back. ``inverted``
    says the image has a dark background (as ``IMAGE_NORMALIZATION="stretch"`` leaves
    bright-field and tissue images): it is inverted back first, because optical density is
    defined on transmitted light.
    """
    rgb = np.asarray(image)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        return rgb
    light = 255.0 - rgb if inverted else rgb.astype(np.float64)
    density = -np.log((light + 1.0) / 256.0)
    stains = density @ hed_from_rgb
    stains = stains * rng.uniform(1 - alpha, 1 + alpha, 3) + rng.uniform(-beta, beta, 3)
    out = np.clip(np.exp(-(stains @ rgb_from_hed)) * 256.0 - 1.0, 0, 255)
    out = 255.0 - out if inverted else out
    return np.round(out).astype(np.uint8)


def _per_image_step(transform: Any, probability: float, name: str) -> Any:
    """An imgaug step that applies ``transform(image, rng)`` to each image with ``probability``."""
    def apply(images, random_state, parents, hooks):
        # imgaug hands a frozen random state per call, so image and replay agree.
        seed = int(random_state.randint(0, 2 ** 31 - 1))
        rng = np.random.default_rng(seed)
        return [transform(im, rng) if rng.random() < probability else im for im in images]
    return iaa.Lambda(func_images=apply, name=name)


def _smooth_field(shape: tuple[int, int], rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Gaussian noise blurred by ``sigma`` px and scaled to [0, 1]: a stain's uneven amount."""
    field = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), sigma)
    low, high = float(field.min()), float(field.max())
    return (field - low) / (high - low) if high > low else np.zeros(shape, np.float32)


def stain_grey_as_tissue(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A grey dark-background crop (fluorescence) redrawn as H&E-stained tissue, inverted as
    ``IMAGE_NORMALIZATION="stretch"`` shows tissue to the network.

    Fluorescence crops are most of the training set and their nuclei are labelled well, while
    stained tissue is rare and comes from few microscopes. Here a nucleus's brightness becomes its
    amount of haematoxylin above a haematoxylin background, eosin comes as uneven stroma plus
    cytoplasm around the nuclei (a wide blur of the image, no labels read), and both are mixed
    into transmitted light with the Ruifrok-Johnston vectors. The ranges (stain units of
    skimage's ``hed_from_rgb``) cover the training set's stained images: haematoxylin 0.4-1.7 in
    nuclei and 0.2-0.6 around them; the nucleus-to-surround contrast is drawn down to 0.15, so
    pale nuclei among darker ones are shown too. Colour or light-background crops come back
    unchanged.
    """
    rgb = np.asarray(image)
    if rgb.ndim != 3 or rgb.shape[-1] != 3 or image_kind(rgb) != "fluorescence":
        return rgb
    grey = rgb.astype(np.float32).mean(axis=-1)
    top = float(np.percentile(grey, 99.5))
    low = float(np.percentile(grey, 5))
    if top - low < 8:
        return rgb
    shape = grey.shape
    signal = np.clip((grey - low) / (top - low), 0, 1) ** rng.uniform(0.7, 1.4)
    cytoplasm = cv2.GaussianBlur(signal, (0, 0), rng.uniform(3.0, 10.0))
    cytoplasm /= max(float(cytoplasm.max()), 1e-6)
    # Where there is tissue at all: everywhere, or patches with bare glass between them.
    tissue = np.clip((_smooth_field(shape, rng, 30.0) - rng.uniform(-0.6, 0.6)) / 0.2, 0, 1)
    tissue = np.maximum(tissue, cytoplasm)
    chromatin = 1 + rng.uniform(0, 0.3) * (_smooth_field(shape, rng, 1.0) - 0.5)
    haematoxylin = (rng.uniform(0.05, 0.5) * tissue * (0.7 + 0.6 * _smooth_field(shape, rng, 8.0))
                    + rng.uniform(0.15, 1.1) * signal * chromatin)
    eosin = (tissue * rng.uniform(0.0, 0.5) * (0.5 + 0.5 * _smooth_field(shape, rng, 4.0))
             + rng.uniform(0.0, 0.4) * cytoplasm + rng.uniform(0.1, 0.7) * signal)
    stains = np.stack([haematoxylin, eosin, np.zeros(shape, np.float32)], axis=-1)
    light = np.exp(-(stains @ rgb_from_hed.astype(np.float32))) * 256.0 - 1.0
    return np.round(255.0 - np.clip(light, 0, 255)).astype(np.uint8)


def appearance_steps() -> list[Any]:
    """Image-only steps that change how nuclei look, not where they are.

    Stain amounts (H&E-like colour), hue and saturation, random greyscale and channel order
    (colour that carries no information about nuclei), rare inversion, gamma and contrast,
    blur and noise. Probabilities keep most crops close to the original.
    """
    return [
        _per_image_step(jitter_stains, 0.3, "StainJitter"),
        iaa.Sometimes(0.3, iaa.MultiplyHueAndSaturation(mul_hue=(0.8, 1.2),
                                                        mul_saturation=(0.5, 1.5))),
        iaa.Sometimes(0.2, iaa.Grayscale(alpha=1.0)),
        iaa.Sometimes(0.2, iaa.ChannelShuffle(1.0)),
        iaa.Sometimes(0.05, iaa.Invert(1.0)),
        iaa.Sometimes(0.3, iaa.GammaContrast((0.6, 1.6))),
        iaa.Sometimes(0.3, iaa.LinearContrast((0.7, 1.4))),
        iaa.Sometimes(0.15, iaa.GaussianBlur(sigma=(0.0, 1.2))),
        iaa.Sometimes(0.15, iaa.AdditiveGaussianNoise(scale=(0, 0.04 * 255))),
    ]


class LogUniform(iap.StochasticParameter):
    """imgaug parameter: factors drawn so that 1/2 and 2 are equally likely around 1."""

    def __init__(self, low: float, high: float):
        super().__init__()
        self.low, self.high = float(low), float(high)

    def _draw_samples(self, size, random_state):
        return np.exp(random_state.uniform(np.log(self.low), np.log(self.high), size))


def scale_step(scale: tuple[float, float], probability: float = 0.5) -> Any:
    """Rescale a crop by a factor drawn log-uniformly from ``scale`` (image and masks alike).

    Nuclei then appear at other magnifications than the training images'. Shrinking leaves a
    black border, which after normalisation is what background looks like.
    """
    try:
        low, high = (float(v) for v in scale)
    except (TypeError, ValueError):
        raise ValueError(f"scale must be a (low, high) pair of numbers, got {scale!r}") from None
    if not 0 < low <= high:
        raise ValueError(f"scale range must satisfy 0 < low <= high, got {scale!r}")
    return iaa.Sometimes(probability, iaa.Affine(scale=LogUniform(low, high), order=1))


def aspect_step(ratio: float, probability: float = 0.5) -> Any:
    """Stretch a crop along one axis by a factor drawn log-uniformly from ``1/ratio``-``ratio``
    (image and masks alike), so nuclei appear wider or narrower than they were imaged.

    Deep Retina, the best single Mask R-CNN of the 2018 DSB, called random rescaling with a
    change of aspect ratio its most important augmentation. Only x is stretched: the flips and
    quarter turns before it put either image axis there.
    """
    ratio = float(ratio)
    if not ratio >= 1:
        raise ValueError(f"aspect ratio jitter must be >= 1, got {ratio!r}")
    return iaa.Sometimes(probability, iaa.Affine(scale={"x": LogUniform(1 / ratio, ratio),
                                                        "y": 1.0}, order=1))


def dim_instances(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                  fraction: float = 0.3, factor: tuple[float, float] = (0.15, 0.7),
                  sigma: float = 1.5, defocus: float = 0.0,
                  toward: str = "darkest") -> np.ndarray:
    """``image`` (uint8 [H, W, C], dark background) with a random ``fraction`` of the instances
    of ``mask`` [H, W, N] dimmed: their signal above the background multiplied by a factor drawn
    from ``factor``, with edges blurred by ``sigma`` so no hard rim is left. ``toward`` names the
    background they fade into: ``"darkest"`` the image's 5th percentile (the slide between
    cells), ``"surround"`` the pixels around each nucleus (:func:`surround_level`): in tissue a
    weakly stained nucleus fades into its cytoplasm, not into the glass. With ``defocus`` > 0
    the dimmed nuclei are also blurred, by a Gaussian of sigma drawn from 0.5-``defocus`` px
    (one draw per image), as nuclei out of the focal plane look; their masks stay as labelled.

    Out-of-focus and weakly stained nuclei beside bright ones are what the model misses most on
    the stage-1 test images (the dense fluorescence kinds); the training labels mark such nuclei
    rarely. Dimming labelled nuclei shows the network that a faint nucleus is still one.
    """
    if toward not in DIM_TOWARD:
        raise ValueError(f"toward must be one of {DIM_TOWARD}, got {toward!r}")
    n = mask.shape[-1]
    if n == 0:
        return image
    chosen = np.flatnonzero(rng.random(n) < fraction)
    if not chosen.size:
        return image
    gain = np.ones(image.shape[:2], np.float32)
    dimmed = np.zeros(image.shape[:2], bool)
    # Grown by 2 sigma, so the blurred step lies on the background around the nucleus (where
    # there is little signal to scale) instead of leaving a bright rim inside it.
    grow = max(1, int(round(2 * sigma)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
    for k in chosen:
        region = cv2.dilate(mask[..., k].astype(np.uint8), kernel).astype(bool)
        gain[region] = np.minimum(gain[region], rng.uniform(*factor))
        dimmed |= region
    gain = cv2.GaussianBlur(gain, (0, 0), sigma)
    source = image.astype(np.float32)
    if defocus > 0:
        source = _defocused(source, dimmed, rng.uniform(0.5, max(0.5, defocus)), sigma)
    if toward == "surround":
        background = surround_level(image, mask.any(axis=-1))
    else:
        background = np.percentile(image.reshape(-1, image.shape[-1]), 5,
                                   axis=0).astype(np.float32)
    out = background + (source - background) * gain[..., None]
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


SURROUND_SIGMA = 8.0
"""Reach (Gaussian sigma, px) over which :func:`surround_level` averages the pixels that are
no nucleus: about a nucleus's radius, so the level is that of the cytoplasm around it."""


def surround_level(image: np.ndarray, nuclei: np.ndarray,
                   sigma: float = SURROUND_SIGMA) -> np.ndarray:
    """Float32 [H, W, C]: at each pixel the Gaussian-weighted mean of the pixels of ``image``
    outside ``nuclei`` (bool [H, W]) nearby; where none lies within a few ``sigma``, the image's
    5th percentile."""
    source = image.astype(np.float32)
    if source.ndim == 2:
        source = source[..., None]
    outside = (~nuclei).astype(np.float32)
    weight = cv2.GaussianBlur(outside, (0, 0), sigma)
    summed = cv2.GaussianBlur(source * outside[..., None], (0, 0), sigma)
    if summed.ndim == 2:
        summed = summed[..., None]
    darkest = np.percentile(source.reshape(-1, source.shape[-1]), 5, axis=0).astype(np.float32)
    known = weight > 1e-3
    level = np.broadcast_to(darkest, source.shape).copy()
    level[known] = summed[known] / weight[known][:, None]
    return level


def _defocused(image: np.ndarray, where: np.ndarray, sigma: float,
               edge: float) -> np.ndarray:
    """``image`` (float32 [H, W, C]) blurred by ``sigma`` inside ``where``, unchanged
    elsewhere; the switch between the two softened by ``edge`` px."""
    blurred = cv2.GaussianBlur(image, (0, 0), sigma)
    if blurred.ndim == 2:
        blurred = blurred[..., None]
    weight = cv2.GaussianBlur(where.astype(np.float32), (0, 0), edge)[..., None]
    return image * (1 - weight) + blurred * weight


class WithDimming:
    """An imgaug augmenter followed, on a share of the images, by :func:`dim_instances`; a
    callable ``(image, mask) -> (image, mask)`` as
    :func:`mrcnn.augmentation.apply_augmentation` takes one. Images with a light background
    (median above mid-grey after normalisation) are not dimmed. ``defocus``: the largest
    sigma of the blur given to dimmed nuclei (0: none)."""

    def __init__(self, augmenter: Any | None, probability: float = 0.5, seed: int | None = None,
                 defocus: float = 0.0, toward: str = "darkest"):
        if not 0 <= probability <= 1:
            raise ValueError(f"dimming probability must be in [0, 1], got {probability}")
        if defocus < 0:
            raise ValueError(f"defocus sigma must be >= 0, got {defocus}")
        self.augmenter = augmenter
        self.probability = probability
        if toward not in DIM_TOWARD:
            raise ValueError(f"dimming toward must be one of {DIM_TOWARD}, got {toward!r}")
        self.defocus = defocus
        self.toward = toward
        self.rng = np.random.default_rng(seed)

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.augmenter is not None:
            image, mask = apply_augmentation(self.augmenter, image, mask)
        if self.rng.random() < self.probability and np.median(image) < 128:
            image = dim_instances(image, mask, self.rng, defocus=self.defocus,
                                  toward=self.toward)
        return image, mask


def build_augmentation(flip: bool = True,
                       brightness: tuple[float, float] | None = (0.8, 1.5),
                       rotate90: bool = False, appearance: bool = False,
                       scale: tuple[float, float] | None = None,
                       dim: float = 0.0, defocus: float = 0.0,
                       aspect: float | None = None, dim_toward: str = "darkest",
                       tissue: float = 0.0) -> Any | None:
    """An imgaug augmenter for training; ``None`` if it would do nothing. With ``dim`` > 0 it
    is wrapped in :class:`WithDimming`, which dims some nuclei of that share of the images
    (and blurs them by up to ``defocus`` px) toward ``dim_toward`` (see :func:`dim_instances`).

    ``brightness`` is the (low, high) range of the factor that multiplies pixel values.
    ``rotate90`` adds a quarter turn by 0-3 steps; with both flips that draws each of the
    eight orientations of the square equally (nuclei have no preferred direction).
    ``appearance`` adds :func:`appearance_steps`; ``scale`` (low, high) rescales half the crops
    by a factor in that range (:func:`scale_step`); ``aspect`` (a ratio >= 1) stretches half the
    crops along one axis by up to that ratio (:func:`aspect_step`); ``tissue`` is the share of
    grey dark-background crops redrawn as stained tissue (:func:`stain_grey_as_tissue`).
    """
    if not 0 <= tissue <= 1:
        raise ValueError(f"share of grey crops shown as tissue must be in [0, 1], got {tissue}")
    steps = []
    if flip:
        steps += [iaa.Fliplr(0.5), iaa.Flipud(0.5)]
    if rotate90:
        steps.append(iaa.Rot90((0, 3)))
    if scale is not None:
        steps.append(scale_step(scale))
    if aspect is not None:
        steps.append(aspect_step(aspect))
    if tissue > 0:
        steps.append(_per_image_step(stain_grey_as_tissue, tissue, "GreyAsTissue"))
    if brightness is not None:
        try:
            low, high = (float(v) for v in brightness)
        except (TypeError, ValueError):
            raise ValueError(f"brightness must be a (low, high) pair of numbers, "
                             f"got {brightness!r}") from None
        if not 0 < low <= high:
            raise ValueError(f"brightness range must satisfy 0 < low <= high, got {brightness!r}")
        steps.append(iaa.Multiply((low, high)))
    if appearance:
        steps += appearance_steps()
    augmenter = iaa.Sequential(steps) if steps else None
    if dim > 0:
        return WithDimming(augmenter, dim, defocus=defocus, toward=dim_toward)
    return augmenter
