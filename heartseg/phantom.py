"""A synthetic cine MRI phantom cohort in ACDC layout with exactly known volumes.

Geometry (millimetres, continuous; the label maps sample it, see render_labels)
-------------------------------------------------------------------------
The long axis of the left ventricle runs along the slice axis, from the base (the top slice
that holds heart) to the apex.

* LV cavity: a half-ellipsoid, in-plane radius ``a``, long semi-axis ``c``; its volume is
  ``2/3 pi a^2 c``. Through the cycle both scale with ``v(t)^(1/3)``, so the cavity volume is
  ``EDV x v(t)`` exactly, with ``v = 1`` at ED (frame 1) and ``v = 1 - EF`` at ES.
* LV myocardium: the shell between the cavity and a larger half-ellipsoid with radii
  ``a + w``, ``c + w``; ``w(t)`` is solved so that the myocardial volume stays constant
  (the wall thickens in systole).
* RV cavity: a crescent: in every slice, a disc beside the LV minus the LV epicardial disc.
  Its volume is the integral along the long axis of that closed-form area (disc minus lens)
  computed by adaptive quadrature, so it is exact to about 1e-9 ml.

Contrast imitates cine SSFP: bright blood, dark myocardium, grey tissue inside a body
outline, dark air around it, a smooth multiplicative coil bias field and Rician noise.
Each patient draws size, position, in-plane rotation, slice count and spacing, frame count
and EF (15 to 75 %) from a seeded random generator.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import numpy.typing as npt
from scipy import integrate, ndimage, optimize

from heartseg.labels import Structure


@dataclass(frozen=True)
class PhantomParameters:
    """Everything that defines one phantom patient."""

    patient_id: str
    n_frames: int
    es_frame: int
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    centre_mm: tuple[float, float]
    base_z_mm: float
    rotation_deg: float
    lv_edv_ml: float
    lv_ef: float
    lv_long_to_radius: float
    myo_ml: float
    rv_radius_ratio: float
    rv_ef: float
    height_cm: float
    weight_kg: float
    seed: int


def draw_parameters(patient_id: str, rng: np.random.Generator) -> PhantomParameters:
    """Random but plausible parameters for one patient."""
    in_plane = float(rng.choice([1.25, 1.37, 1.5, 1.5625, 1.68, 1.8]))
    slice_mm = float(rng.choice([5.0, 6.5, 7.0, 8.0, 10.0]))
    lv_edv = float(rng.uniform(90, 260))
    ratio = float(rng.uniform(1.6, 2.2))  # long semi-axis / radius
    a = (3 * lv_edv * 1000 / (2 * math.pi * ratio)) ** (1 / 3)
    c = ratio * a
    heart_depth_mm = c + 14
    n_slices = math.ceil(heart_depth_mm / slice_mm) + int(rng.integers(1, 4))
    nx, ny = int(rng.integers(160, 240)), int(rng.integers(160, 240))
    n_frames = int(rng.integers(12, 31))
    es = 1 + round(n_frames * rng.uniform(0.3, 0.42))
    centre = (  # inside the body, near the middle of the field of view
        float(nx * in_plane * rng.uniform(0.4, 0.6)),
        float(ny * in_plane * rng.uniform(0.4, 0.6)),
    )
    return PhantomParameters(
        patient_id=patient_id,
        n_frames=n_frames,
        es_frame=es,
        shape=(nx, ny, n_slices),
        spacing=(in_plane, in_plane, slice_mm),
        centre_mm=centre,
        base_z_mm=(n_slices - 1.5) * slice_mm,  # the base lies on a slice boundary
        rotation_deg=float(rng.uniform(0, 360)),
        lv_edv_ml=lv_edv,
        lv_ef=float(rng.uniform(0.15, 0.75)),
        lv_long_to_radius=ratio,
        myo_ml=float(lv_edv * rng.uniform(0.55, 1.0)),
        rv_radius_ratio=float(rng.uniform(1.15, 1.35)),
        rv_ef=float(rng.uniform(0.25, 0.65)),
        height_cm=float(rng.uniform(150, 195)),
        weight_kg=float(rng.uniform(50, 110)),
        seed=int(rng.integers(0, 2**31)),
    )


@dataclass(frozen=True)
class PhaseGeometry:
    """The shapes of one cardiac phase (lengths in mm)."""

    a: float  # LV cavity radius
    c: float  # LV cavity long semi-axis
    w: float  # myocardial wall thickness
    rv_b: float  # RV disc radius at the base
    rv_c: float  # RV long semi-axis
    rv_offset: float  # distance between the LV and RV disc centres


def contraction(frame: int, params: PhantomParameters) -> float:
    """0 at ED (frame 1), 1 at the ES frame, smooth in between and back."""
    phase = (frame - 1) / params.n_frames
    phase_es = (params.es_frame - 1) / params.n_frames
    if phase <= phase_es:
        return 0.5 * (1 - math.cos(math.pi * phase / phase_es))
    return 0.5 * (1 + math.cos(math.pi * (phase - phase_es) / (1 - phase_es)))


def phase_geometry(frame: int, params: PhantomParameters) -> PhaseGeometry:
    """The LV, myocardium and RV shapes at one frame."""
    g = contraction(frame, params)
    lv_scale: float = (1 - params.lv_ef * g) ** (1 / 3)
    a0: float = (3 * params.lv_edv_ml * 1000 / (2 * math.pi * params.lv_long_to_radius)) ** (1 / 3)
    a, c = a0 * lv_scale, a0 * params.lv_long_to_radius * lv_scale
    myo_mm3 = params.myo_ml * 1000

    def myo_excess(w: float) -> float:
        return 2 / 3 * math.pi * ((a + w) ** 2 * (c + w) - a**2 * c) - myo_mm3

    w = optimize.brentq(myo_excess, 0.0, 60.0, xtol=1e-12)
    w0 = optimize.brentq(lambda x: 2 / 3 * math.pi * ((a0 + x) ** 2 * (a0 * params.lv_long_to_radius + x)
                                                     - a0**3 * params.lv_long_to_radius) - myo_mm3, 0.0, 60.0)
    rv_scale = math.sqrt(1 - params.rv_ef * g)
    rv_b = params.rv_radius_ratio * (a0 + w0) * rv_scale
    # The RV disc overlaps the LV epicardium: what remains is a crescent wrapped around the septum's far side.
    return PhaseGeometry(a=a, c=c, w=w, rv_b=rv_b, rv_c=0.8 * a0 * params.lv_long_to_radius,
                         rv_offset=0.7 * (a + w))


def _half_ellipsoid_radius(depth: float, radius: float, semi_axis: float) -> float:
    if depth < 0 or depth >= semi_axis:
        return 0.0
    return radius * math.sqrt(1 - (depth / semi_axis) ** 2)


def _lens_area(r1: float, r2: float, d: float) -> float:
    """Area of the intersection of two discs of radii r1, r2 whose centres are d apart."""
    if r1 <= 0 or r2 <= 0 or d >= r1 + r2:
        return 0.0
    if d <= abs(r1 - r2):
        return math.pi * min(r1, r2) ** 2
    alpha = math.acos((d * d + r1 * r1 - r2 * r2) / (2 * d * r1))
    beta = math.acos((d * d + r2 * r2 - r1 * r1) / (2 * d * r2))
    return r1 * r1 * (alpha - math.sin(2 * alpha) / 2) + r2 * r2 * (beta - math.sin(2 * beta) / 2)


def _rv_area(depth: float, geo: PhaseGeometry) -> float:
    rv_r = _half_ellipsoid_radius(depth, geo.rv_b, geo.rv_c)
    epi_r = _half_ellipsoid_radius(depth, geo.a + geo.w, geo.c + geo.w)
    return math.pi * rv_r**2 - _lens_area(rv_r, epi_r, geo.rv_offset)


def analytic_volumes_ml(geo: PhaseGeometry) -> dict[str, float]:
    """Exact LV cavity, myocardium and RV cavity volumes of one phase, in ml."""
    lv = 2 / 3 * math.pi * geo.a**2 * geo.c
    epi = 2 / 3 * math.pi * (geo.a + geo.w) ** 2 * (geo.c + geo.w)
    rv, _ = integrate.quad(_rv_area, 0.0, geo.rv_c, args=(geo,), epsabs=1e-6, limit=200)
    return {"lv_ml": lv / 1000, "myo_ml": (epi - lv) / 1000, "rv_ml": rv / 1000}


def render_labels(geo: PhaseGeometry, params: PhantomParameters, subsamples: int = 8) -> np.ndarray:
    """The ACDC label map of one phase, shape ``(x, y, z)``.

    In-plane the shapes are sampled at voxel centres; through each (thick) slice they are
    sampled at ``subsamples`` depths, and a voxel takes a structure when at least half of its
    samples lie inside it, as a radiologist labels a partial-volume voxel.
    """
    x, y, z = _voxel_centres(params)
    cx, cy = params.centre_mm
    theta = math.radians(params.rotation_deg)
    rx, ry = cx + geo.rv_offset * math.cos(theta), cy + geo.rv_offset * math.sin(theta)
    d_lv2 = (x - cx) ** 2 + (y - cy) ** 2
    d_rv2 = (x - rx) ** 2 + (y - ry) ** 2
    slice_mm = params.spacing[2]
    counts = {name: np.zeros(params.shape, np.int16) for name in ("lv", "epi", "rv")}
    for k in range(subsamples):
        depth = params.base_z_mm - (z + ((k + 0.5) / subsamples - 0.5) * slice_mm)
        r_lv = _radius_field(depth, geo.a, geo.c)
        r_epi = _radius_field(depth, geo.a + geo.w, geo.c + geo.w)
        r_rv = _radius_field(depth, geo.rv_b, geo.rv_c)
        epi = d_lv2 < r_epi**2
        counts["lv"] += d_lv2 < r_lv**2
        counts["epi"] += epi
        counts["rv"] += (d_rv2 < r_rv**2) & ~epi
    half = subsamples / 2
    labels = np.zeros(params.shape, np.uint8)
    labels[counts["rv"] >= half] = Structure.RV.label
    labels[counts["epi"] >= half] = Structure.MYO.label
    labels[counts["lv"] >= half] = Structure.LV.label
    return labels


def _radius_field(depth: np.ndarray, radius: float, semi_axis: float) -> np.ndarray:
    """Cross-section radius of a half-ellipsoid at each depth below the base (0 outside it)."""
    inside = np.clip(1 - (depth / semi_axis) ** 2, 0.0, None)
    return np.where((depth >= 0) & (depth < semi_axis), radius * np.sqrt(inside), 0.0)


def _voxel_centres(params: PhantomParameters) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    nx, ny, nz = params.shape
    sx, sy, sz = params.spacing
    return (
        (np.arange(nx) * sx)[:, None, None],
        (np.arange(ny) * sy)[None, :, None],
        (np.arange(nz) * sz)[None, None, :],
    )


def render_image(labels: np.ndarray, params: PhantomParameters, rng: np.random.Generator,
                 anatomy: np.ndarray, bias: np.ndarray) -> npt.NDArray[np.int16]:
    """Cine-SSFP-like intensities for one phase (int16)."""
    image = anatomy.copy()
    blood = (labels == Structure.LV.label) | (labels == Structure.RV.label)
    image[blood] = 0.95
    image[labels == Structure.MYO.label] = 0.22
    rv_wall = ndimage.binary_dilation(labels == Structure.RV.label, iterations=2) & (labels == 0)
    image[rv_wall] = 0.25
    sigma = (0.7, 0.7, 0.0)
    image = ndimage.gaussian_filter(image, sigma=sigma) * bias
    noise = 0.035
    real = image + rng.normal(0, noise, image.shape)
    imag = rng.normal(0, noise, image.shape)
    magnitude: npt.NDArray[np.float64] = np.sqrt(real**2 + imag**2)
    return np.clip(magnitude * 1200, 0, 32767).astype(np.int16)


def _static_anatomy(params: PhantomParameters, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Body outline, tissue texture and lung-like dark regions, and a smooth coil bias field."""
    x, y, _ = _voxel_centres(params)
    nx, ny, _ = params.shape
    sx, sy, _ = params.spacing
    cx, cy = nx * sx / 2, ny * sy / 2
    body = ((x - cx) / (0.46 * nx * sx)) ** 2 + ((y - cy) / (0.4 * ny * sy)) ** 2 <= 1
    anatomy = np.where(body, 0.38, 0.02) * np.ones(params.shape)
    texture = ndimage.gaussian_filter(rng.normal(0, 1, params.shape), sigma=(3, 3, 0))
    anatomy += np.where(body, 0.03 * texture / (texture.std() + 1e-9), 0.0)
    for _ in range(int(rng.integers(2, 5))):  # other organs: liver, stomach, vessels
        ox, oy = rng.uniform(0.2, 0.8) * nx * sx, rng.uniform(0.2, 0.8) * ny * sy
        if math.hypot(ox - params.centre_mm[0], oy - params.centre_mm[1]) < 80:
            continue
        organ = ((x - ox) / rng.uniform(15, 45)) ** 2 + ((y - oy) / rng.uniform(15, 45)) ** 2 < 1
        anatomy[np.broadcast_to(organ, params.shape) & body] = rng.uniform(0.3, 0.7)
    for _ in range(2):  # lungs: dark blobs inside the body, away from the heart centre
        lx, ly = rng.uniform(0.25, 0.75) * nx * sx, rng.uniform(0.25, 0.75) * ny * sy
        if math.hypot(lx - params.centre_mm[0], ly - params.centre_mm[1]) < 70:
            continue
        lung = ((x - lx) ** 2 + (y - ly) ** 2) < rng.uniform(25, 40) ** 2
        anatomy[np.broadcast_to(lung, params.shape) & body] = 0.06
    gx, gy = rng.uniform(-0.5, 0.5, 2)
    bias = 1 + gx * (x - cx) / (nx * sx) + gy * (y - cy) / (ny * sy) + 0.3 * (
        ((x - cx) / (nx * sx)) ** 2 + ((y - cy) / (ny * sy)) ** 2
    )
    return anatomy, np.broadcast_to(bias, params.shape).astype(np.float64)


def _affine(params: PhantomParameters) -> np.ndarray:
    sx, sy, sz = params.spacing
    affine = np.diag([-sx, -sy, sz, 1.0])
    affine[:3, 3] = (params.shape[0] * sx / 2, params.shape[1] * sy / 2, -params.shape[2] * sz / 2)
    return affine


def _save(data: np.ndarray, params: PhantomParameters, path: Path) -> None:
    image = nib.Nifti1Image(data, _affine(params))
    zooms = params.spacing if data.ndim == 3 else (*params.spacing, 1.0)
    image.header.set_zooms(zooms)
    image.set_qform(_affine(params), code=1)
    image.set_sform(_affine(params), code=1)
    nib.save(image, path)


def write_patient(folder: Path, params: PhantomParameters) -> dict[str, object]:
    """Write one phantom patient in ACDC layout and return its truth record."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(params.seed)
    anatomy, bias = _static_anatomy(params, rng)
    pid = params.patient_id
    frames = []
    cine = np.zeros((*params.shape, params.n_frames), np.int16)
    for frame in range(1, params.n_frames + 1):
        geo = phase_geometry(frame, params)
        labels = render_labels(geo, params)
        cine[..., frame - 1] = render_image(labels, params, rng, anatomy, bias)
        volumes = analytic_volumes_ml(geo)
        frames.append({"frame": frame, **volumes})
        if frame in (1, params.es_frame):
            _save(cine[..., frame - 1], params, folder / f"{pid}_frame{frame:02d}.nii.gz")
            _save(labels, params, folder / f"{pid}_frame{frame:02d}_gt.nii.gz")
    _save(cine, params, folder / f"{pid}_4d.nii.gz")
    (folder / "Info.cfg").write_text(
        f"ED: 1\nES: {params.es_frame}\nGroup: PHANTOM\nHeight: {params.height_cm:.1f}\n"
        f"NbFrame: {params.n_frames}\nWeight: {params.weight_kg:.1f}\n"
    )
    ed, es = frames[0], frames[params.es_frame - 1]
    truth = {
        "patient": pid,
        "ed_frame": 1,
        "es_frame": params.es_frame,
        "lv_edv_ml": ed["lv_ml"],
        "lv_esv_ml": es["lv_ml"],
        "lv_ef_pct": (ed["lv_ml"] - es["lv_ml"]) / ed["lv_ml"] * 100,
        "rv_edv_ml": ed["rv_ml"],
        "rv_esv_ml": es["rv_ml"],
        "rv_ef_pct": (ed["rv_ml"] - es["rv_ml"]) / ed["rv_ml"] * 100,
        "myo_mass_g": ed["myo_ml"] * 1.05,
        "frames": frames,
        "parameters": asdict(params),
    }
    (folder / "Truth.json").write_text(json.dumps(truth, indent=2))
    return truth


def write_cohort(out: Path, n_patients: int, seed: int, on_patient: Callable[[str], None] | None = None,
                 prefix: str = "phantom") -> list[dict[str, object]]:
    """Write ``n_patients`` phantoms named ``<prefix>001``... into ``out``; returns their truth records."""
    rng = np.random.default_rng(seed)
    truths = []
    for index in range(1, n_patients + 1):
        params = draw_parameters(f"{prefix}{index:03d}", rng)
        truths.append(write_patient(out / params.patient_id, params))
        if callable(on_patient):
            on_patient(params.patient_id)
    return truths
