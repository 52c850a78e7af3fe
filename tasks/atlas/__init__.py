"""Activation atlases (Carter et al., 2019): collect one layer's activations over many images, lay
them out with UMAP, average them on a grid, and render each cell with feature visualization."""
