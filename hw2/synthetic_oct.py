"""A procedural stand-in for OCTMNIST (download_octmnist.py -synthetic): 28x28 retinal OCT
B-scans in four classes with OCTMNIST's exact schema and class proportions, rendered from a
small geometric model (retina layers, RPE line, choroid, speckle, registration wedges) with
each class's lesions: CNV elevated RPE and fluid, DME cysts and thickening, drusen small RPE
domes. A share of mild cases looks almost normal, which keeps the task from being trivial
(SEVERITY_*; report, Appendix B).
"""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F

from hw2.octmnist import SPLIT_COUNTS

SIZE = 28
GENERATOR_VERSION = 1
# Severity of a lesion ~ SEVERITY_MIN + (1 - SEVERITY_MIN) * U^SEVERITY_POWER: a power above 1
# puts more mass on mild, hard-to-see cases.
SEVERITY_MIN = 0.06
SEVERITY_POWER = 2.0


def _gauss(x: np.ndarray, centre, width) -> np.ndarray:
    return np.exp(-0.5 * ((x - centre) / width) ** 2)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _u(rng: np.random.Generator, low: float, high: float, n: int, *extra: int) -> np.ndarray:
    """Uniform draws shaped (n, 1, 1, *extra) so they broadcast against (n, H, W) images."""
    return rng.uniform(low, high, size=(n, 1, 1, *extra)).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, n: int, coarse: int) -> np.ndarray:
    """Low-frequency texture in [-1, 1]: coarse noise upsampled bilinearly to SIZE x SIZE."""
    noise = torch.from_numpy(rng.uniform(-1, 1, size=(n, 1, coarse, coarse)).astype(np.float32))
    smooth = F.interpolate(noise, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    return smooth[:, 0].numpy()


def _bumps(x: np.ndarray, rng: np.random.Generator, n: int, count: int, height, width_range,
           centre_range=(0.15, 0.85)) -> np.ndarray:
    """Sum of up to `count` Gaussian bumps per image along x: (n, 1, W)."""
    present = (rng.uniform(size=(n, 1, 1, count)) < rng.uniform(0.4, 1.0, size=(n, 1, 1, 1)))
    present[..., 0] = True
    centres = _u(rng, *centre_range, n, count)
    widths = _u(rng, *width_range, n, count)
    heights = height * _u(rng, 0.5, 1.0, n, count) * present
    return (heights * _gauss(x[..., None], centres, widths)).sum(-1)


def _cysts(x: np.ndarray, rel: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    """DME's dark intraretinal cysts: up to 4 blobs per image, at relative depth `rel`."""
    n_cyst = 4
    cyst_x = _u(rng, 0.25, 0.75, n, n_cyst)
    cyst_r = _u(rng, 0.3, 0.7, n, n_cyst)
    cyst_w = _u(rng, 0.025, 0.06, n, n_cyst)
    cyst_on = rng.uniform(size=(n, 1, 1, n_cyst)) < 0.7
    return (cyst_on * np.exp(-0.5 * (((x[..., None] - cyst_x) / cyst_w) ** 2
                                     + ((rel[..., None] - cyst_r) / 0.13) ** 2))).max(-1)


def _acquire(intensity: np.ndarray, x: np.ndarray, y: np.ndarray, rng: np.random.Generator,
             n: int) -> np.ndarray:
    """The scanner: multiplicative speckle, gain and gamma, the registration wedges; uint8."""
    looks = 60.0  # 28x28 pixels average many speckle grains of the original scan
    # Gamma(looks, 1/looks) speckle, drawn through its normal approximation (much faster).
    speckle = 1 + rng.standard_normal(size=(n, SIZE, SIZE), dtype=np.float32) / np.sqrt(looks)
    intensity = intensity * np.maximum(speckle, 0)
    intensity = _u(rng, 0.8, 1.15, n) * intensity ** _u(rng, 0.85, 1.15, n)
    wedge_h = _u(rng, 0.04, 0.2, n)
    from_left = rng.uniform(size=(n, 1, 1)) < 0.5
    ramp = np.where(from_left, 1 - x, x)
    at_top = rng.uniform(size=(n, 1, 1)) < 0.5
    has_wedge = rng.uniform(size=(n, 1, 1)) < 0.5
    in_wedge = np.where(at_top, y < wedge_h * ramp, 1 - y < wedge_h * ramp) & has_wedge
    intensity = np.where(in_wedge, 1.0, intensity)
    return np.clip(intensity * 255, 0, 255).round().astype(np.uint8)


def render(labels: np.ndarray, rng: np.random.Generator,
           severity_power: float = SEVERITY_POWER) -> np.ndarray:
    """Render one uint8 (N, 28, 28) image per label (0 CNV, 1 DME, 2 drusen, 3 normal)."""
    n = len(labels)
    lab = labels.reshape(n, 1, 1)
    cnv, dme, drusen = (lab == 0), (lab == 1), (lab == 2)
    y = ((np.arange(SIZE, dtype=np.float32) + 0.5) / SIZE).reshape(1, SIZE, 1)
    x = ((np.arange(SIZE, dtype=np.float32) + 0.5) / SIZE).reshape(1, 1, SIZE)
    severity = SEVERITY_MIN + (1 - SEVERITY_MIN) * _u(rng, 0, 1, n) ** severity_power
    severity = np.where(lab == 3, 0.0, severity).astype(np.float32)

    # Geometry of the RPE line (bottom of the retina) and of the inner limiting membrane.
    depth = _u(rng, 0.42, 0.62, n)
    tilt = _u(rng, -0.15, 0.15, n)
    curve = _u(rng, -0.05, 0.35, n)
    base_rpe = depth + tilt * (x - 0.5) + curve * (x - 0.5) ** 2
    cnv_lift = _bumps(x, rng, n, 3, 0.14, (0.05, 0.14), (0.3, 0.7)) \
        + 0.015 * np.sin(x * _u(rng, 25, 45, n))
    drusen_lift = _bumps(x, rng, n, 5, 0.055, (0.018, 0.035))
    lift = severity * (cnv * cnv_lift + drusen * drusen_lift)
    rpe = base_rpe - lift

    thickness = _u(rng, 0.15, 0.21, n) * (1 + severity * (0.9 * dme + 0.4 * cnv))
    fovea = _u(rng, 0.38, 0.62, n)
    pit = _u(rng, 0.45, 0.7, n) * (1 - 0.7 * severity * (dme + cnv))
    thickness = thickness * (1 - pit * _gauss(x, fovea, _u(rng, 0.06, 0.1, n)))
    ilm = rpe - thickness
    fluid = severity * cnv * _bumps(x, rng, n, 2, 0.06, (0.04, 0.08), (0.35, 0.65))
    ilm = ilm - fluid  # subretinal fluid pushes the retina up

    edge = 0.6 / SIZE
    inside = _sigmoid((y - ilm) / edge) * _sigmoid((rpe - fluid - y) / edge)
    below = _sigmoid((y - rpe) / edge)
    rel = np.clip((y - ilm) / np.maximum(rpe - fluid - ilm, 1e-3), 0, 1)

    retina = (0.32 + 0.28 * np.exp(-rel / 0.12) - 0.14 * _gauss(rel, 0.66, 0.12)
              + 0.22 * _gauss(rel, 0.92, 0.03))
    retina = retina * (1 - 0.95 * np.clip(severity * dme * 1.6, 0, 1) * _cysts(x, rel, rng, n))

    intensity = 0.11 * (1 - inside) * (1 - below) + retina * inside
    rpe_line = _gauss(y, rpe, _u(rng, 0.016, 0.026, n))
    intensity = intensity + _u(rng, 0.45, 0.7, n) * rpe_line
    # CNV: bright subretinal lesion above the elevated RPE; drusen: material under the domes.
    lesion = severity * cnv * _gauss(y, rpe - 0.03, 0.025) * (cnv_lift > 0.05 * cnv_lift.max(
        axis=-1, keepdims=True))
    intensity = intensity + 0.5 * lesion
    dome = drusen * _sigmoid((y - rpe) / edge) * _sigmoid((base_rpe - y) / edge)
    intensity = intensity + 0.25 * dome
    choroid = 0.42 * np.exp(-(y - rpe) / _u(rng, 0.08, 0.16, n)) \
        * (1 + 0.3 * _smooth_noise(rng, n, 9))
    intensity = intensity + below * (1 - dome) * choroid

    return _acquire(intensity, x, y, rng, n)


CHUNK = 4096


def _render_chunk(job: tuple[np.ndarray, tuple[int, ...], float]) -> np.ndarray:
    labels, seed, severity_power = job
    return render(labels, np.random.default_rng(seed), severity_power)


def make_dataset(seed: int, processes: int | None = None,
                 severity_power: float = SEVERITY_POWER) -> dict[str, np.ndarray]:
    """The whole stand-in with OCTMNIST's keys: per split, labels with the given class
    counts in random order and one image each. Every chunk of images has its own seed, so the
    result is the same for any number of worker processes."""
    from multiprocessing import get_context
    jobs, arrays = [], {}
    for index, (split, counts) in enumerate(SPLIT_COUNTS.items()):
        labels = np.repeat(np.arange(len(counts), dtype=np.uint8), counts)
        np.random.default_rng([seed, index]).shuffle(labels)
        arrays[f"{split}_labels"] = labels.reshape(-1, 1)
        jobs += [(split, (labels[i:i + CHUNK], (seed, index, i), severity_power))
                 for i in range(0, len(labels), CHUNK)]
    with get_context("spawn").Pool(processes or os.cpu_count()) as pool:
        chunks = pool.map(_render_chunk, [job for _, job in jobs])
    for split in SPLIT_COUNTS:
        arrays[f"{split}_images"] = np.concatenate(
            [c for (s, _), c in zip(jobs, chunks) if s == split])
    return {key: arrays[key] for key in sorted(arrays)}
