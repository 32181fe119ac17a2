"""nnU-Net v2 inference inside one process (imports torch and nnunetv2, of the [worker] extra)."""

from heartseg.extras import require

require("segmentation", "worker", "torch", "nnunetv2")
