"""The tiny evaluation config shared by the evaluation tests (test_evaluation.py, test_evaluation_config.py), and
its writer."""

from __future__ import annotations

import json
from pathlib import Path

TINY = """
dataset = "mnist"
test_samples = 24
batch_size = 8
defenses = ["standard", "feature_squeezing", "gda_brelu"]
blackbox_attacks = ["fgsm", "jsma"]
whitebox_attacks = ["fgsm"]
whitebox_eps = [0.0, 0.2]

[training]
epochs = 1
train_samples = 600
source_depth = 8

[defense]
gda_copies = 2

[attack]
jsma_gamma = 0.05
"""


def write_config(tmp_path: Path, text: str = TINY, **top: object) -> Path:
    lines = [f"{k} = {json.dumps(v)}" for k, v in top.items()]
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines) + "\n" + text)
    return path
