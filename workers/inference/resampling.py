"""Which resampling a loaded model uses: its plans' own, or nnU-Net's torch resampling.

The shipped plans resample with nnU-Net's scipy functions (``resample_data_or_seg_to_shape``: cubic in-plane,
nearest across slices for the image, linear for the probabilities), which run on the CPU and hold the GIL for
much of their time. nnU-Net also ships ``resample_torch_fornnunet``
(``nnunetv2.preprocessing.resampling.resample_torch``): the same separate-z logic with torch's interpolation
(linear), on any device. :func:`use_torch_resampling` points a loaded configuration at it, for the image on its
way in and the probabilities on their way out; the masks then differ from the plans' by a few voxels
(``bench.resampling`` measures how many, and the Dice).
"""

from __future__ import annotations

from typing import Any

import torch
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

#: The resampling functions of a configuration, with whether each resamples a segmentation.
_FUNCTIONS = (("data", False), ("probabilities", False), ("seg", True))


def use_torch_resampling(manager: ConfigurationManager, device: torch.device, threads: int | None = None) -> None:
    """Make ``manager`` resample with ``resample_torch_fornnunet`` on ``device`` (in place)."""
    config: dict[str, Any] = manager.configuration
    for kind, is_seg in _FUNCTIONS:
        config[f"resampling_fn_{kind}"] = "resample_torch_fornnunet"
        config[f"resampling_fn_{kind}_kwargs"] = {
            "is_seg": is_seg, "force_separate_z": None, "memefficient_seg_resampling": False,
            "device": device, "num_threads": threads or torch.get_num_threads()}
        # nnU-Net caches each function once built (functools.lru_cache on the property): build it again.
        getattr(ConfigurationManager, f"resampling_fn_{kind}").fget.cache_clear()
