"""The installed vdiff version (from the package metadata, so it matches `pip show vdiff-server`)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def _installed_version() -> str:
    try:
        return version("vdiff-server")
    except PackageNotFoundError:  # running from a source tree without an install
        return "0.0.0+unknown"


__version__ = _installed_version()
