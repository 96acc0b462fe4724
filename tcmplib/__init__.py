"""tcmplib: topologically consistent magnitude pruning of skeleton-based GCNs.

The modules follow the paper's sections:

- :mod:`tcmplib.data`: skeleton sequences (FPHA and an embedded synthetic set) as node signals.
- :mod:`tcmplib.model`: the baseline attention GCN (Section 2).
- :mod:`tcmplib.train`: the training recipe shared by every method (Section 5).
- :mod:`tcmplib.topology`: accessibility and co-accessibility (Section 4.1).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tcmplib")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
