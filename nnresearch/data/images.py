"""`images64`: the chapter's section 2.3 case study, 64 x 64 RGB images flattened to 12,288 inputs.

Each image is a dim noisy background with one bright shape near the centre: a disc (label 1) or
an axis-aligned square (label 0) of the *same area*, with random colour, size (radius 8-16 px) and
offset (up to 6 px each way). Colour and brightness carry no signal; a linear model gets only the
partial cue of where the mass sits (square corners vs disc rim), which the size and offset blur.
Measured with scikit-learn at the default 400 images (300 train): logistic regression fits train
perfectly and scores ~75% on held-out images, like the chapter's cat classifier; a 64-unit MLP
does no better at that size.
"""

from __future__ import annotations

import numpy as np

from .dataset import Samples

SIDE = 64
CHANNELS = 3
N_FEATURES = SIDE * SIDE * CHANNELS  # 12,288
MIN_RADIUS, MAX_RADIUS, MAX_OFFSET = 8.0, 16.0, 6.0  # px; the largest square still fits the frame


def _shape_masks(rng: np.random.Generator, is_disc: np.ndarray) -> np.ndarray:
    """`(m, 64, 64)` 0/1 masks: discs of radius r or squares of side sqrt(pi) r (equal area)."""
    m = len(is_disc)
    radius = rng.uniform(MIN_RADIUS, MAX_RADIUS, (m, 1, 1))
    half = radius * np.sqrt(np.pi) / 2  # square half-side with the disc's area
    centre = (SIDE - 1) / 2
    cy = centre + rng.uniform(-MAX_OFFSET, MAX_OFFSET, (m, 1, 1))
    cx = centre + rng.uniform(-MAX_OFFSET, MAX_OFFSET, (m, 1, 1))
    rows, cols = np.ogrid[:SIDE, :SIDE]
    dy, dx = rows - cy, cols - cx
    disc = dy**2 + dx**2 <= radius**2
    square = np.maximum(np.abs(dy), np.abs(dx)) <= half
    return np.where(is_disc[:, None, None], disc, square)


def images64(rng: np.random.Generator, *, n_samples: int = 400, noise: float = 0.1) -> Samples:
    """Disc-vs-square images. X: `(m, 12288)` in [0, 1], pixels flattened row, column, channel
    (height x width x RGB, as the chapter flattens its tensor); y: `(m,)` 0/1, balanced.

    `noise` is the std of the i.i.d. Gaussian pixel noise added before clipping to [0, 1].
    """
    y = np.arange(n_samples) % 2
    masks = _shape_masks(rng, y == 1)
    background = rng.uniform(0.0, 0.3, (n_samples, 1, 1, CHANNELS))
    colour = rng.uniform(0.5, 1.0, (n_samples, 1, 1, CHANNELS))
    images = np.where(masks[..., None], colour, background)
    images += noise * rng.standard_normal(images.shape)
    np.clip(images, 0.0, 1.0, out=images)
    return Samples(images.reshape(n_samples, N_FEATURES), y, "binary")
