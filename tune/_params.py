"""Optuna's names for the searched layer count and widths (hidden_channels), shared by the space and the baselines."""

LAYERS_PARAM, WIDTH_PARAM = "num_layers", "width_{}"
