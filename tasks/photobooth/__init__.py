"""Photobooth: expression and kiss models, attention over faces, quality filter, shutter, indicator.

See docs/photobooth.md."""
