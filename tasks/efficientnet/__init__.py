"""EfficientNet (Tan & Le, ICML 2019): the compound-scaling rule, scaled baselines and the B0-B7
variants as timm models, the published ImageNet training recipe (TF RMSProp, staircase exponential
decay, TF-style weight EMA), the parameter/FLOP table and the (alpha, beta, gamma) grid search.

Importing this package registers nothing: ``core.registry`` names ``tasks.efficientnet.model`` (the
timm models) and the resolvers of ``tasks.efficientnet.resolvers``, and imports them explicitly."""
