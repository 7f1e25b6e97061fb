"""Shared setup for operator tests.

tests/operator cannot be a package named `operator` (it would shadow the standard library), so its
helper modules are put on sys.path here. The drift timer interval is read when handlers are imported.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("VDIFF_OPERATOR_RESYNC_SECONDS", "0.5")
