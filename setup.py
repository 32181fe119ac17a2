"""Which packages the distribution holds (everything else is in pyproject.toml).

The shipped model, ``models/`` in a checkout, goes into the wheel as the package ``heartseg_models``
(its files as package data), so that an installed HeartSeg finds it where a checkout does
(:data:`heartseg.settings.SHIPPED_MODELS_DIR`). A source tree without ``models/`` (the Docker images'
build context, which mounts the model instead) builds the code alone.
"""

from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent

packages = find_packages(where=str(ROOT), include=["heartseg", "heartseg.*", "workers", "workers.*", "scheduler",
                                                   "scheduler.*", "db", "db.*"])
package_dir = {}
if (ROOT / "models" / "__init__.py").is_file():
    packages.append("heartseg_models")
    package_dir["heartseg_models"] = "models"

setup(packages=packages, package_dir=package_dir)
