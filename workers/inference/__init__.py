"""nnU-Net v2 inference inside one process (imports torch and nnunetv2)."""
