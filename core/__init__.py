"""Platform code shared by every system: training loop wiring, I/O, data and video helpers.

Importing ``core`` does nothing else: scoring commands import only the modules they use (NumPy and
the standard library). The OmegaConf resolvers the configs use are registered by
``core.resolvers.register_resolvers()``, called where configs are composed or resolved (the entry
points, ``core.prediction``, tests/conftest.py) and once when ``core.training`` is imported, the one
module that registers on import (a SLURM job unpickles ``main`` by value and imports it first)."""
