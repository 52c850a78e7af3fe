"""Fine-grained visual categorization (FGVC6): the competitions' graders and submission files, test-time
prior estimation (Saerens et al. 2002) and domain-specific transfer (Cui et al. 2018). The data sets'
readers live in ``datamodules/`` (``fgvc/`` and one module per competition).

Kept import-free so ``python -m tasks.fgvc.evaluate`` runs with numpy alone."""
