"""Images degraded on purpose, to test the quality estimate on failures of other kinds than ACDC's own.

Each degradation takes a 3D frame in HeartSeg's ``(x, y, z)`` order and returns a float32 frame of the
same shape and geometry (the references stay valid); each is deterministic for a given seed:

``noise``
    Rician noise, as in magnitude MR images: ``sqrt((I + n1)^2 + n2^2)`` with ``n1``, ``n2`` Gaussian of
    standard deviation 8 % of the frame's 99th intensity percentile.
``blur``
    In-plane Gaussian blur, sigma 1.5 pixels (no blur between slices).
``lowres``
    Half the in-plane resolution: 2 x 2 pixel blocks averaged, then linearly interpolated back to the grid.
``bias``
    A smooth multiplicative field across the field of view, as from a receive coil: intensities scaled by
    ``exp(0.6 * (u + v))`` with ``u``, ``v`` from -0.5 to 0.5 along x and y (a factor from 0.55 to 1.82).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

NOISE_FRACTION = 0.08
BLUR_SIGMA_PX = 1.5
LOWRES_FACTOR = 2
BIAS_STRENGTH = 0.6


def noise(image: np.ndarray, seed: int = 0) -> np.ndarray:
    """Rician noise (see the module's description)."""
    rng = np.random.default_rng(seed)
    data = image.astype(np.float32)
    sigma = NOISE_FRACTION * float(np.percentile(data, 99))
    real = data + rng.normal(0.0, sigma, data.shape)
    imaginary = rng.normal(0.0, sigma, data.shape)
    return np.sqrt(real * real + imaginary * imaginary).astype(np.float32)


def blur(image: np.ndarray, seed: int = 0) -> np.ndarray:
    """In-plane Gaussian blur."""
    del seed
    return np.asarray(ndimage.gaussian_filter(image.astype(np.float32), (BLUR_SIGMA_PX, BLUR_SIGMA_PX, 0)),
                      dtype=np.float32)


def lowres(image: np.ndarray, seed: int = 0) -> np.ndarray:
    """Half the in-plane resolution, on the same grid."""
    del seed
    data = image.astype(np.float32)
    f = LOWRES_FACTOR
    x, y = (data.shape[0] // f) * f, (data.shape[1] // f) * f
    blocks = data[:x, :y].reshape(x // f, f, y // f, f, data.shape[2]).mean(axis=(1, 3))
    zoom = (data.shape[0] / blocks.shape[0], data.shape[1] / blocks.shape[1], 1.0)
    return np.asarray(ndimage.zoom(blocks, zoom, order=1, grid_mode=True, mode="nearest"), dtype=np.float32)


def bias(image: np.ndarray, seed: int = 0) -> np.ndarray:
    """A smooth multiplicative field across the field of view."""
    del seed
    data = image.astype(np.float32)
    u = np.linspace(-0.5, 0.5, data.shape[0])[:, None, None]
    v = np.linspace(-0.5, 0.5, data.shape[1])[None, :, None]
    return (data * np.exp(BIAS_STRENGTH * (u + v))).astype(np.float32)


#: The degradations by name.
DEGRADATIONS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "noise": noise, "blur": blur, "lowres": lowres, "bias": bias}
