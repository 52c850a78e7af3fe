"""Platform code shared by every system: training loop wiring, I/O, data and video helpers."""

from core.resolvers import register_resolvers

register_resolvers()
