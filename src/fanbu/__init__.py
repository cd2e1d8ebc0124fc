"""fanbu: derive small domain models from a large one (脱胎) and feed the swarm back into it (反哺)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fanbu")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
