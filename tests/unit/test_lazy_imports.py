"""The service starts without the heavy libraries it needs only for some pages and machines.

matplotlib (PDF reports) and ``scipy.signal`` (spectra of milling machines' waveforms) cost about
100 MB of RSS together; a fleet of 100,000 bolts fits issue 17's 500 MB only without them. They
are imported where they are used, so ``boltwatch run`` loads them on the first report or
waveform, never at start.
"""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("matplotlib", "scipy.signal")


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return set(out.stdout.split())


def test_starting_the_service_loads_neither_matplotlib_nor_scipy_signal() -> None:
    assert _loaded_after("import boltwatch.run, boltwatch.web, detection.registry") == set()


def test_a_report_or_a_spectrum_loads_them_when_asked() -> None:
    """The lazy imports are real imports: the modules that use them still find them."""
    loaded = _loaded_after(
        "import boltwatch.web\nfrom dashboards.report.plots import joint_drawing\n"
        "import numpy as np\n"
        "from detection.cnc import waveform_features\n"
        "waveform_features(np.sin(np.arange(32768) * 0.3), 25600.0, 12000.0)"
    )
    assert loaded == set(HEAVY)
