"""TALNet (Chao et al. 2018): temporal action localization on snippet features, its ActivityNet-style
scorer (``python -m tasks.talnet.evaluate``, numpy only), late fusion of RGB and flow streams, highlights."""
