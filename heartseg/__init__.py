"""HeartSeg shared core: settings, errors, label conventions and the study model.

Both the scheduler and the workers import this package, so it must stay light:
it never imports torch, nnunetv2 or Celery.
"""

__version__ = "0.1.0"
