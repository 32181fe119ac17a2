"""HeartSeg's optional parts and the extras that install them (``pip install 'heartseg[s3]'``).

The core (the scheduler, the CLI, the metrics worker) imports none of their packages. A module that
needs one checks it with :func:`require` where the feature is used, so a missing package is one line
naming the extra to install, not a traceback:

========== ===================================================================== ==========================
extra      feature                                                               packages
========== ===================================================================== ==========================
worker     segmentation (``predict``, ``worker gpu``, ``run``, ``demo``), SEGs   torch, nnunetv2, highdicom
s3         ``s3://`` sources and results                                         boto3
pacs       ``dicomweb://`` sources (a PACS)                                      dicomweb-client
monitoring ``heartseg flower``, the workers' Prometheus endpoint                 flower, prometheus-client
viewer     ``heartseg viewer`` (OHIF over the PACS, with HeartSeg's SEGs)          tornado
all        every one of them
========== ===================================================================== ==========================
"""

from __future__ import annotations

from importlib.util import find_spec

from heartseg.errors import ConfigurationError


class MissingExtraError(ConfigurationError):
    """A feature used without its optional packages; the message names them and the extra that installs them."""

    def __init__(self, feature: str, extra: str, packages: list[str]) -> None:
        self.extra = extra
        self.packages = packages
        super().__init__(f"{feature} needs {' and '.join(packages)}: pip install 'heartseg[{extra}]'")


def installed(module: str) -> bool:
    """Whether the top-level ``module`` can be imported (found without importing it)."""
    return find_spec(module) is not None


def require(feature: str, extra: str, *modules: str) -> None:
    """Raise :class:`MissingExtraError` unless every one of ``modules`` (import names) is installed.

    The message names the missing ones by their pip name (``dicomweb_client`` -> ``dicomweb-client``).
    """
    missing = [module.replace("_", "-") for module in modules if not installed(module)]
    if missing:
        raise MissingExtraError(feature, extra, missing)
