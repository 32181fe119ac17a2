"""Code that runs on HeartSeg workers: metrics, cardiac indices, inference, Celery tasks.

Importing this package imports nothing heavy; torch and nnunetv2 are imported only by
the modules that need them (inference and training).
"""
