"""What the FGVC6 DataModules share: long-tail samplers, held-out validation, test ids and the
competition's solution file (see :mod:`datamodules.fgvc.base`)."""
