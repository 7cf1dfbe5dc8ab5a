"""The tiny evaluation configs shared by the evaluation tests (test_evaluation*.py) and their writer, the command
line of a run, the cells of its results, and the exception a test raises to interrupt a run."""

from __future__ import annotations

import json
import sys
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


def config_differences(a: dict, b: dict, prefix: str = "") -> dict[str, tuple]:
    """The keys (dotted: "attack.jsma_theta") whose values differ between two configs' dicts, with both values."""
    out = {}
    for key in sorted(set(a) | set(b)):
        if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
            out.update(config_differences(a[key], b[key], f"{prefix}{key}."))
        elif a.get(key) != b.get(key):
            out[prefix + key] = (a.get(key), b.get(key))
    return out


def evaluate_command(config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "nemesis_fast.cli", "evaluate", "--config", str(config), "--no-progress", *extra]


def cell_values(results_json: Path) -> list[tuple]:
    data = json.loads(results_json.read_text())
    return [
        (c["defense"], c["attack"], c["setting"], c["eps"], c["accuracy"], round(c["mean_l2"], 5))
        for c in data["cells"]
    ]


class Interrupted(Exception):
    pass


AUTHORS_TINY = (
    TINY.replace('whitebox_attacks = ["fgsm"]', 'whitebox_attacks = ["fgsm", "pgd"]')
    .replace("whitebox_eps = [0.0, 0.2]", "whitebox_eps = [0.1, 0.6]")
    .replace("source_depth = 8", 'source_architecture = "small_resnet"')
    .replace("gda_copies = 2", "gda_copies = 2\ngda_clip = false\ngda_fixed_set = true\nsqueeze_training = true")
    .replace(
        "jsma_gamma = 0.05",
        'jsma_gamma = 0.05\njsma_use_logits = false\nfgsm_labels = "predicted"\nrfgsm_labels = "predicted"\n'
        "rfgsm_alpha_fixed = true\npgd_steps = 3\npgd_restarts = 2\npgd_test_samples = 16",
    )
)
