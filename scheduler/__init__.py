"""The scheduler: study discovery, enqueueing, the ``heartseg`` CLI and reports.

It never imports torch or nnunetv2, so it starts fast and fits a small container.
"""
