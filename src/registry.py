"""Model name (config key `model`) -> the package implementing the model interface.

Each package module provides: build_train_network(cfg), build_inference_network(cfg, train_net=None),
create_dataset(cfg, split, rank, group_size), create_evaluator(cfg), metas_from_batch(batch),
postprocess(cfg, outputs, metas), preprocess_image(cfg, img_rgb), show_result(cfg, img_rgb, result,
output), eval_items(cfg), output_shapes(cfg, batch_size),
example_inputs(cfg, batch_size), num_classes(cfg), BACKBONE_PREFIX, METRIC and OFFICIAL_CHECKPOINT (the
rename table from the model zoo's checkpoint names to ours, src/engine/checkpoint.OfficialLayout).
"""
from __future__ import annotations

import importlib
from src.errors import ConfigError

MODELS = {
    "ssd300_mobilenet_v2": "src.ssd.model",
    "crnn": "src.crnn.model",
}


def get_model(name: str):
    """Import and return the model-interface module registered under `name`."""
    if name not in MODELS:
        raise ConfigError(f"config key 'model' is '{name}'; known models: {', '.join(sorted(MODELS))}")
    return importlib.import_module(MODELS[name])
