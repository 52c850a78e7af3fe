"""EfficientNet compound scaling: the scaling rule, scaled baselines registered with timm, the
parameter/FLOP table and the (alpha, beta, gamma) grid search. Importing this package registers
``compound_scaled_{efficientnet,mobilenetv2,resnet50}`` with timm and the ``compound_resolution``
OmegaConf resolver."""

from tasks.efficientnet import model, resolvers  # noqa: F401  (registration side effects)
