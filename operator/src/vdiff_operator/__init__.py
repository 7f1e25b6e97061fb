"""vdiff operator: `kopf run -m vdiff_operator` registers every handler by importing this package."""

from vdiff_operator import handlers, probes, settings

__all__ = ["handlers", "probes", "settings"]
