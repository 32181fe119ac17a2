"""Every real ACDC patient loads, in every variant the data set has."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from heartseg.labels import Phase
from heartseg.studies import open_study
from heartseg.studies.acdc import load_acdc_patient, read_info_cfg

pytestmark = pytest.mark.acdc


def test_all_100_patients_load_with_their_variants(acdc_root: Path) -> None:
    folders = sorted(p for p in acdc_root.iterdir() if p.is_dir())
    assert len(folders) == 100
    dtypes: Counter[str] = Counter()
    slice_mm: set[float] = set()
    in_plane: list[float] = []
    shapes: list[tuple[int, int, int]] = []
    for folder in folders:
        study = load_acdc_patient(folder, cine=False)
        info = read_info_cfg(folder / "Info.cfg")
        assert (study.ed, study.es) == (info.ed, info.es)
        assert study.frame_numbers == tuple(sorted({info.ed, info.es}))
        assert study.info.group in {"DCM", "HCM", "MINF", "NOR", "RV"}
        image_file = folder / f"{folder.name}_frame{info.ed:02d}.nii.gz"
        header = nib.load(image_file).header
        dtypes[str(header.get_data_dtype())] += 1
        # spacing comes from the header's pixel dimensions, in mm
        assert study.spacing == pytest.approx(tuple(float(z) for z in header.get_zooms()[:3]))
        for frame in study.frames:
            assert frame.image.dtype == np.float32
            assert frame.reference is not None and frame.reference.dtype == np.uint8
            assert frame.reference.shape == frame.image.shape
            assert set(np.unique(frame.reference)) <= {0, 1, 2, 3}
        assert study.phase_of(info.ed) is Phase.ED and study.phase_of(info.es) is Phase.ES
        slice_mm.add(round(study.spacing[2], 2))
        in_plane.append(study.spacing[0])
        shapes.append(study.shape)
    assert set(dtypes) == {"int16", "float32", "uint8"}
    assert slice_mm == {5.0, 6.5, 7.0, 10.0}
    assert min(in_plane) == pytest.approx(0.70, abs=0.01) and max(in_plane) == pytest.approx(1.92, abs=0.01)
    assert min(s[0] for s in shapes) == 154 and max(s[0] for s in shapes) == 428
    assert min(s[1] for s in shapes) == 154 and max(s[1] for s in shapes) == 512
    assert min(s[2] for s in shapes) == 6 and max(s[2] for s in shapes) == 18


def test_the_4d_cine_makes_every_phase_a_frame(acdc_root: Path) -> None:
    study = open_study(acdc_root / "patient090")
    cine = nib.load(acdc_root / "patient090" / "patient090_4d.nii.gz")
    assert len(study.frames) == cine.shape[3] == study.info.n_frames == 12
    assert [f.number for f in study.frames_with_reference()] == [study.ed, study.es] == [4, 11]
    # a phase without a frame file comes from the cine itself
    np.testing.assert_array_equal(study.frame(1).image, np.asarray(cine.dataobj[..., 0], dtype=np.float32))
    # the ED frame is the image its reference was drawn on
    ed_file = nib.load(acdc_root / "patient090" / "patient090_frame04.nii.gz")
    np.testing.assert_array_equal(study.frame(4).image, np.asarray(ed_file.dataobj, dtype=np.float32))


def test_cine_false_loads_only_ed_and_es(acdc_root: Path) -> None:
    study = load_acdc_patient(acdc_root / "patient090", cine=False)
    assert study.frame_numbers == (4, 11)
