"""The trained nnU-Net v2 models shipped with HeartSeg, installed as the package ``heartseg_models``.

``Dataset027_ACDC/nnUNetTrainer__HeartSegPlans__2d`` is the default model (``HEARTSEG_MODEL_DIR``);
:data:`heartseg.settings.SHIPPED_MODELS_DIR` finds this folder in a checkout or an installed wheel.
"""
