"""Package list only (everything else is in pyproject.toml): the ``sslkit*`` packages plus the
root ``configs/`` folder, which ships inside the package as ``sslkit/configs`` without moving it
(``package-dir`` in pyproject.toml; ``sslkit.training.config.config_dir()`` finds either location)."""

from setuptools import find_namespace_packages, setup

setup(packages=[*find_namespace_packages(include=["sslkit*"], exclude=["*.__pycache__"]), "sslkit.configs"])
