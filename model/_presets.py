"""Named model presets (--model-type): graphcast's four model types as values of ModelConfig's fields.

The values are graphcast's defaults for each type (its train_convlstm.py flags and convlstm/model*.py classes):
GroupNorm in the cells, bottleneck self-attention, spatial dropout 0.2 (none in `shallow`), no BatchNorm.
"stacked" is the plain model, ModelConfig's own defaults.
"""

from __future__ import annotations

from data_io import ConfigError

_GRAPHCAST = {"topology": "unet", "upstream_fusion": "bottleneck", "use_attention": True, "use_group_norm": True,
              "use_batch_norm": False, "use_spatial_dropout": True}

PRESETS: dict[str, dict] = {
    # ConvLSTMUNet: no dropout. Graphcast ignores --include-upstream for this type; here, given upstream data, the
    # upstream stream joins at the bottleneck (leave out --include-upstream for graphcast's single stream).
    "shallow": {**_GRAPHCAST, "hidden_channels": [32, 64], "dropout_rate": 0.0, "dropout_levels": "all"},
    # DeepConvLSTMUNet: dropout 0.2 below the bottleneck, 0.3 at it, 0.1 in the decoder.
    "deep": {**_GRAPHCAST, "hidden_channels": [64, 128, 256, 512], "dropout_rate": 0.2, "dropout_levels": "all"},
    # DualStreamConvLSTMUNet, graphcast's default: dropout at the bottleneck only.
    "dual_stream": {**_GRAPHCAST, "hidden_channels": [64, 128], "dropout_rate": 0.2, "dropout_levels": "bottleneck"},
    "dual_stream_deep": {**_GRAPHCAST, "hidden_channels": [64, 128, 256, 512], "dropout_rate": 0.2,
                         "dropout_levels": "all"},
}


def preset(model_type: str, defaults: dict | None = None) -> dict:
    """The architecture fields this model type sets, over `defaults` (ModelConfig's own values, i.e. "stacked";
    passed in by model.config, which imports this module)."""
    base = {k: v for k, v in (defaults or {}).items() if k != "model_type"}
    if model_type == "stacked":
        return base
    if model_type not in PRESETS:
        raise ConfigError(f"--model-type {model_type!r} is not a preset; choose one of {['stacked', *PRESETS]}")
    return {**base, **PRESETS[model_type]}


def expand_preset(values: dict, where: str, defaults: dict) -> dict:
    """One config source with its model_type's preset filled in under the keys the source does not give."""
    section = values.get("model") if isinstance(values.get("model"), dict) else None
    model_type = (section or {}).get("model_type", values.get("model_type"))
    if model_type is None:
        return values
    if not isinstance(model_type, str):
        raise ConfigError(f"{where}: model_type = {model_type!r} is not a name; choose one of {['stacked', *PRESETS]}")
    given = set(values) | set(section or {})
    filled = {k: v for k, v in preset(model_type, defaults).items() if k not in given}
    if section is not None:
        return {**values, "model": {**filled, **section}}
    return {**filled, **values}
