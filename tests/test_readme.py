"""README.md's Python examples run as written, on small budgets: each block's calls and signatures are the API's.
And what README states that is checkable in a second (the bottom half of this file): the attack table's signatures,
its commands and options, presets and bench suites, links into BENCHMARKS.md, the defaults it names, and its figures
against the files they come from (benchmarks/results/*/ JSON, runs/*/results.md).

The examples are taken from README.md itself. Only their budgets change (fewer images, steps and samples) and
their data paths (the package's MNIST sample); each replacement must apply, so a reworded example fails here
until this file follows it. The fragments about the peers' own classes get the names they assume in a prelude.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from nemesis_fast.data.mnist import MNIST_SAMPLE_DIR

README = Path(__file__).resolve().parent.parent / "README.md"

SMALL_BUDGETS = {
    "/path/to/mnist": str(MNIST_SAMPLE_DIR),
    '"gda", epochs=20)': '"gda", epochs=1, max_steps=3, log=False)',
    "[:256]": "[:4]",
    "CarliniWagnerL2(model)": "CarliniWagnerL2(model, binary_search_steps=1, max_iter=3)",
    '"clip": None})': '"clip": None}, max_steps=2, log=False)',
    "n=100_000": "n=64",
    "batch_size=10_000": "batch_size=48",
    "n=1000": "n=32",
}

CIFAR_MODEL = """
import numpy as np
import torch
from torch import nn
from nemesis_fast.models import cifar_cnn
torch.manual_seed(0)
model = cifar_cnn().eval()
images, labels = torch.rand(2, 3, 32, 32), torch.tensor([3, 5])
"""
ART_CLASSIFIER = """
from art.estimators.classification import PyTorchClassifier
m = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32).reshape(3, 1, 1)
s = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32).reshape(3, 1, 1)
x_test, y_test = images.numpy(), labels.numpy()
"""


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def small(block: str) -> str:
    for old, new in SMALL_BUDGETS.items():
        block = block.replace(old, new)
    return block


def test_every_budget_replacement_applies():
    text = "".join(python_blocks())
    assert len(python_blocks()) == 4
    for old in SMALL_BUDGETS:
        assert old in text, f"README's examples no longer hold {old!r}: update SMALL_BUDGETS"


def test_the_api_and_certify_examples_run():
    api, certify = python_blocks()[:2]
    namespace: dict = {}
    exec(compile(small(api), "README.md (API)", "exec"), namespace)
    x, x_adv = namespace["x"], namespace["x_adv"]
    assert x_adv.shape == x.shape == (4, 1, 28, 28) and x_adv.min() >= 0 and x_adv.max() <= 1
    assert not torch.equal(x_adv, x)  # the attack moved the images
    exec(compile(small(certify), "README.md (certified robustness)", "exec"), namespace)
    result = namespace["result"]
    assert result.radius.shape == (4,) and (result.radius >= 0).all()
    assert ((result.prediction == -1) == (result.radius == 0)).all()


def test_the_torchattacks_example_runs():
    pytest.importorskip("torchattacks")
    namespace: dict = {}
    exec(compile(CIFAR_MODEL + small(python_blocks()[2]), "README.md (torchattacks)", "exec"), namespace)
    adv_images = namespace["adv_images"]
    assert adv_images.shape == (2, 3, 32, 32) and not torch.equal(adv_images, namespace["images"])


def test_the_art_example_runs():
    pytest.importorskip("art")
    namespace: dict = {}
    exec(compile(CIFAR_MODEL + ART_CLASSIFIER + small(python_blocks()[3]), "README.md (ART)", "exec"), namespace)
    assert namespace["x_adv"].shape == namespace["x_cw"].shape == (2, 3, 32, 32)
    prediction, radius = namespace["prediction"], namespace["radius"]
    assert prediction.shape == radius.shape == (2,) and ((prediction == -1) == (radius == 0)).all()


# ---------------------------------------------------------------------------------------------------------------
# What README states that a test can check without running anything long: the attacks' signatures in its table, the
# commands and options it shows, its links into BENCHMARKS.md, the defaults it names, and its figures against the
# result files they come from. Each fails where README and its source part ways (README reworded: update the test).

ROOT = README.parent
RESULTS = ROOT / "benchmarks" / "results"


def readme_text() -> str:
    return README.read_text()


def table_row(first_cell: str) -> list[str]:
    """The cells of README's one table row whose first cell is `first_cell`."""
    rows = [line for line in readme_text().splitlines() if line.startswith(f"| {first_cell} |")]
    assert len(rows) == 1, f"README has {len(rows)} table rows starting with {first_cell!r}"
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", rows[0].strip().strip("|"))]


def test_the_attack_table_gives_each_attacks_signature():
    import ast
    import inspect

    from nemesis_fast import attacks

    found = 0
    for line in readme_text().splitlines():
        match = re.match(r"\| [^|]+ \| `(\w+)\((.*?)\)`", line.replace("\\|", "\x00"))
        if not match or not hasattr(attacks, match[1]):
            continue
        found += 1
        name, listed = match[1], [p.strip() for p in match[2].replace("\x00", "|").split(", ")]
        parameters = list(inspect.signature(getattr(attacks, name)).parameters.values())
        keyword_only, position = False, 0
        for item in listed:
            if item == "*":
                keyword_only = True
                continue
            param_name, _, default = item.partition("=")
            names = [p.name for p in parameters]
            assert param_name in names[position:], f"README's {name} lists {param_name!r}, not in order: {names}"
            position = names.index(param_name) + 1
            parameter = parameters[position - 1]
            kind = inspect.Parameter.KEYWORD_ONLY if keyword_only else inspect.Parameter.POSITIONAL_OR_KEYWORD
            assert parameter.kind == kind, f"{name}({param_name}): README's kind is not the code's"
            if default:
                shown = ast.literal_eval(default.split("|")[0])  # `norm="inf"|"2"`: the first is the default
                assert parameter.default == shown, f"{name}({param_name}={parameter.default!r}), README {default}"
            else:
                assert parameter.default is inspect.Parameter.empty, f"README shows {name}'s {param_name} required"
    assert found == 6  # FGSM, RandFGSM, PGD, DeepFool, CarliniWagnerL2, JSMA


def _subcommands() -> dict:
    from nemesis_fast.cli import build_parser, command_parsers

    parser = build_parser()
    return {"parser": parser, **command_parsers(parser)}


def test_readmes_commands_parse_with_the_options_it_names(monkeypatch):
    import shlex

    from torch.distributed.run import get_args_parser

    commands = _subcommands()
    monkeypatch.setattr("sys.argv", ["nemesis-fast"])
    whole = []  # the complete command lines of README's shell blocks
    for block in re.findall(r"```bash\n(.*?)```", readme_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.startswith("nemesis-fast "):
                whole.append(shlex.split(line)[1:])
            elif " -m nemesis_fast.cli " in line:
                whole.append(shlex.split(line.split(" -m nemesis_fast.cli ", 1)[1]))
                launcher = shlex.split(line.replace("--node_rank=R", "--node_rank=0"))  # R: a placeholder
                if launcher[0] == "torchrun":  # torchrun passes the command's options on, not taking them for its own
                    assert get_args_parser().parse_args(launcher[1:]).training_script_args == whole[-1], line
    assert len(whole) == 6
    for argv in whole:
        commands["parser"].parse_args(argv)  # SystemExit where an option or a value is refused
    # Inline mentions and synopses (`nemesis-fast bench [...] [--device ...]`): each option named is the command's.
    spans = re.findall(r"`nemesis-fast (\w+)([^`]*)`", readme_text(), flags=re.S)
    assert len(spans) >= 8
    for command, rest in spans:
        known = set(commands[command]._option_string_actions)
        for option in re.findall(r"(?<![\w-])--[a-z][a-z-]*", rest):
            assert option in known, f"README names `nemesis-fast {command} {option}`, which it does not have"


def test_readmes_presets_and_bench_suites_are_the_shipped_ones():
    from nemesis_fast.bench import SUITES
    from nemesis_fast.evaluation.config import preset_names

    text = readme_text()
    presets = re.search(r"--preset ((?:\w+\|)+\w+)\]", text)[1].split("|")
    assert sorted(presets) == preset_names()
    suites = re.search(r"`nemesis-fast bench \[([\w ]+)\]", text)[1].split()
    assert sorted(suites) == sorted(SUITES)


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation but hyphens and underscores dropped, spaces to
    hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_readmes_links_into_benchmarks_resolve():
    headings = re.findall(r"^#+ (.*)$", (ROOT / "BENCHMARKS.md").read_text(), flags=re.M)
    anchors = {_slug(h) for h in headings}
    links = re.findall(r"\]\(BENCHMARKS\.md#([^)]*)\)", readme_text())
    assert len(links) >= 5
    for anchor in links:
        assert anchor in anchors, f"README links to BENCHMARKS.md#{anchor}, which no heading of it makes"


def test_the_defaults_readme_names_are_the_codes():
    from nemesis_fast.certify import largest_certifiable_radius
    from nemesis_fast.defenses import paper_settings
    from nemesis_fast.parallel.workers import DEFAULT_WAIT_HOURS

    text = " ".join(readme_text().split())  # README's line breaks as spaces
    for phrase in (
        '`"label_smoothing"` (0.9)',
        '`"fgsm_adversarial"` (eps 0.3 on MNIST, 8/255 on CIFAR-10;',
        '`"vat"` (LDS loss, eps 2.1, xi 1e-6;',
        "(`BUDGET`, 450 s by default)",
        "`NEMESIS_FAST_WAIT_HOURS` (default 24;",
        "the default without a GPU is `8.0;9.0+PTX`",
        "(0.96 at sigma 0.3, n = 10,000, alpha = 0.001;",
    ):
        assert phrase in text, f"README no longer says {phrase!r}: update this test with it"
    assert paper_settings("label_smoothing").confidence == 0.9
    assert paper_settings("fgsm_adversarial").eps == 0.3
    assert paper_settings("fgsm_adversarial", "cifar10").eps == 8 / 255
    assert (paper_settings("vat").eps, paper_settings("vat").xi) == (2.1, 1e-6)
    assert re.search(r'BUDGET="\$\{BUDGET:-450\}"', (ROOT / "benchmarks" / "gpu_check.sh").read_text())
    assert DEFAULT_WAIT_HOURS == 24
    assert 'DEFAULT_ARCH_LIST = "8.0;9.0+PTX"' in (ROOT / "setup.py").read_text()
    assert f"{largest_certifiable_radius(10_000, 0.001, 0.3):.2f}" == "0.96"


# README's benchmark figures and the JSON they come from: (the table row's first cell, [(the figure as README shows
# it, a function of a row getter)]).
H200, EPYC, XEON = "h200-2026-12-04", "cpu-epyc-avx512-2026-12-05", "cpu-xeon-avx512-2026-12-07"
EPYC_BF16 = "cpu-epyc-avx512bf16-2026-12-07"  # compat(-run2).json at 8 images, compat-batch128(-run2).json at 128


def _rows(folder: str, suite: str):
    import json

    report = json.loads((RESULTS / folder / f"{suite}.json").read_text())["reports"][0]
    return {(row["case"], row["provider"]): row for row in report["rows"]}


def _get(folder: str, suite: str, case: str, provider: str) -> dict:
    rows = _rows(folder, suite)
    exact = [row for (c, p), row in rows.items() if c == case and p == provider]
    found = exact or [row for (c, p), row in rows.items() if c.startswith(case) and p == provider]
    assert len(found) == 1, f"{folder}/{suite}.json: {len(found)} rows for {case!r}, {provider!r}"
    return found[0]


def _same(row: dict) -> float:
    return row["extra"]["same_images_ms_per_image"]


def _certify_figures(folder: str, bf16_format: str) -> list[tuple[str, float]]:
    """A CPU's certify row: nemesis_fast's and ART's seconds, the speed-up, and the bf16 speed-up as `bf16_format`."""

    def row(provider: str) -> dict:
        return _get(folder, "certify", "vs ART: 40 MNIST images", provider)

    return [
        ("{:.2f} s", row("nemesis_fast")["ms"] / 1e3),
        ("ART, same batch, {:.2f} s", row("ART (batch 1000)")["ms"] / 1e3),
        ("{:.2f}x", row("nemesis_fast")["speedup"]),
        (bf16_format, row("nemesis_fast bf16")["speedup"]),
    ]


def _batch128_figures(case: str, same_images: bool, ms_format: str) -> list[tuple[str, float]]:
    """A row of the drop-ins at 128 images a call: the drop-in's time per image in the first run as `ms_format` (on
    the peer's images where the peer attacked fewer), the peer's, and the speed-ups of the two runs at 128 images and
    of the two at 8."""
    ours = _get(EPYC_BF16, "compat-batch128", case, "nemesis_fast.compat")
    peer = _get(EPYC_BF16, "compat-batch128", case, "peer")
    peer_ms = peer["extra"]["ms_per_image"]
    return [
        (ms_format, _same(ours) if same_images else ours["extra"]["ms_per_image"]),
        ("{:.1f} ms", peer_ms) if peer_ms < 1e3 else ("{:.2f} s", peer_ms / 1e3),
        *[
            ("{:.1f}x" if run < 50 else "{:.0f}x", run)
            for run in (
                _get(EPYC_BF16, suite, case, "nemesis_fast.compat")["speedup"]
                for suite in ("compat-batch128", "compat-batch128-run2", "compat", "compat-run2")
            )
        ],
    ]


def _figures() -> dict[str, list[tuple[str, float]]]:
    """README's table rows (first cell) and, for each, the figures it shows with the value each rounds."""
    g = _get
    brelu = lambda p, case="forward": g(H200, "bounded_relu", case, p)  # noqa: E731
    h200_compat = lambda name: g(H200, "compat", name, "nemesis_fast.compat")  # noqa: E731
    saved = lambda p: g(EPYC, "bounded_relu", "CNN train step", p)["extra"]["saved_MB"]  # noqa: E731
    ga = lambda p: g(EPYC, "gaussian_augment", "float32->float32", p)["ms"]  # noqa: E731
    return {
        "bounded_relu forward, 2^28 float32": [
            ("{:.3f} ms (native)", brelu("native")["ms"]),
            ("{:.0f}% of copy bandwidth", 100 * brelu("native")["fraction_of_copy"]),
            ("torch eager {:.3f} ms", brelu("torch eager")["ms"]),
            ("{:.2f}x", brelu("native")["speedup"]),
        ],
        'bounded_relu forward+backward, `save="mask"`': [
            ("{:.3f} ms (Triton)", brelu("triton save=mask", "forward+backward")["ms"]),
            ("torch.compile {:.3f} ms", brelu("torch.compile", "forward+backward")["ms"]),
            (
                "{:.2f}x",
                brelu("torch.compile", "forward+backward")["ms"] / brelu("triton save=mask", "forward+backward")["ms"],
            ),
        ],
        "gaussian_augment, 10,000 CIFAR images, 10 copies": [
            ("{:.3f} ms (native)", g(H200, "gaussian_augment", "float32->float32, 10000", "native")["ms"]),
            ("torch.compile {:.2f} ms", g(H200, "gaussian_augment", "float32->float32, 10000", "torch.compile")["ms"]),
            (
                "{:.1f}x",
                g(H200, "gaussian_augment", "float32->float32, 10000", "torch.compile")["ms"]
                / g(H200, "gaussian_augment", "float32->float32, 10000", "native")["ms"],
            ),
        ],
        "JSMA pair search, n=3072, B=128": [
            ("{:.3f} ms (native)", g(H200, "jsma", "pair search n=3072, B=128, N(0, 1)", "native")["ms"]),
            ("{:.2e} pairs/s", g(H200, "jsma", "pair search n=3072, B=128, N(0, 1)", "native")["items_per_s"]),
            (
                "materialised search {:.1f} ms",
                g(H200, "jsma", "pair search n=3072, B=128, N", "torch materialised")["ms"],
            ),
            ("{:.0f}x", g(H200, "jsma", "pair search n=3072, B=128, N(0, 1)", "native")["speedup"]),
        ],
        "DeepFool through ART's class, per image (same 32 images)": [
            ("{:.2f} ms", _same(h200_compat("ART DeepFool"))),
            ("ART {:.1f} ms", g(H200, "compat", "ART DeepFool", "peer")["extra"]["ms_per_image"]),
            ("{:.1f}x", h200_compat("ART DeepFool")["speedup"]),
        ],
        "JSMA through torchattacks' class, per image (same 2 images)": [
            ("{:.0f} ms", _same(h200_compat("torchattacks JSMA"))),
            ("torchattacks {:.2f} s", g(H200, "compat", "torchattacks JSMA", "peer")["extra"]["ms_per_image"] / 1e3),
            ("{:.0f}x", h200_compat("torchattacks JSMA")["speedup"]),
        ],
        "DeepFool through torchattacks' class": _batch128_figures("torchattacks DeepFool", False, "{:.2f} ms"),
        "DeepFool through ART's class": _batch128_figures("ART DeepFool", False, "{:.2f} ms"),
        'CarliniL2Method through ART\'s class (`"paper"`, equal iterations)': _batch128_figures(
            "ART CarliniL2Method", False, "{:.2f} ms"
        ),
        "JSMA through torchattacks' class (on the peer's 2 images)": _batch128_figures(
            "torchattacks JSMA", True, "{:.1f} ms"
        ),
        "certify, MNIST CNN, 20 images, n = 10,000": [
            ("{:.1f} ms", g(H200, "certify", "vs ART: 20 MNIST images", "nemesis_fast")["ms"]),
            (
                "ART (batch 20,000) {:.2f} s",
                g(H200, "certify", "vs ART: 20 MNIST images", "ART (batch 20000)")["ms"] / 1e3,
            ),
            ("{:.0f}x", g(H200, "certify", "vs ART: 20 MNIST images", "nemesis_fast")["speedup"]),
        ],
        "certify, 40 images at n = 100,000": [
            ("{:.2f} s", g(H200, "certify", "GPU target", "nemesis_fast")["ms"] / 1e3),
            (
                "10,000 images: {:.0f} s projected",
                g(H200, "certify", "GPU target", "nemesis_fast")["extra"]["projected_s"],
            ),
        ],
        "training epoch, MNIST CNN, 60,000 images": [
            ("{:.0f} ms", g(H200, "training", "train epoch", "DeviceLoader")["ms"]),
            ("torch DataLoader {:.2f} s", g(H200, "training", "train epoch", "torch DataLoader")["ms"] / 1e3),
            ("{:.2f}x", g(H200, "training", "train epoch", "DeviceLoader")["speedup"]),
        ],
        "bounded_relu forward+backward, 2^24 float32": [
            ("{:.1f} ms", g(EPYC, "bounded_relu", "forward+backward", "native")["ms"]),
            ("eager hardtanh {:.1f} ms", g(EPYC, "bounded_relu", "forward+backward", "torch eager")["ms"]),
            ("{:.2f}x", g(EPYC, "bounded_relu", "forward+backward", "native")["speedup"]),
        ],
        "bounded_relu saved-for-backward bytes, CNN": [
            ("{:.1f} MB", saved("BoundedReLU")),
            ("hardtanh {:.1f} MB", saved("nn.Hardtanh")),
            ("(nn.ReLU {:.1f} MB)", saved("nn.ReLU")),
            ("{:.2f}x", saved("BoundedReLU") / saved("nn.Hardtanh")),
        ],
        "gaussian_augment, 128 CIFAR images, 10 copies": [
            ("{:.2f} ms", ga("native")),
            ("eager expression {:.1f} ms", ga("torch eager")),
            ("{:.1f}x", ga("torch eager") / ga("native")),
        ],
        "JSMA pair search, n=3072, B=4": [
            ("{:.3f} ms", g(EPYC, "jsma", "pair search n=3072, B=4, N(0, 1)", "native")["ms"]),
            (
                "materialised search {:.0f} ms",
                g(EPYC, "jsma", "pair search n=3072, B=4, N(0, 1)", "torch materialised")["ms"],
            ),
            ("{:.0f}x", g(EPYC, "jsma", "pair search n=3072, B=4, N(0, 1)", "native")["speedup"]),
        ],
        "DeepFool, CIFAR CNN, per image (the same 4 images)": [
            ("{:.2f} ms", _same(g(EPYC, "attacks", "DeepFool", "nemesis_fast"))),
            ("ART {:.0f} ms", _same(g(EPYC, "attacks", "DeepFool", "ART"))),
            (
                "{:.0f}x",
                _same(g(EPYC, "attacks", "DeepFool", "ART")) / _same(g(EPYC, "attacks", "DeepFool", "nemesis_fast")),
            ),
        ],
        "JSMA attack, CIFAR CNN, on torchattacks' image": [
            ("{:.0f} ms", _same(g(EPYC, "jsma", "JSMA CIFAR CNN", "nemesis_fast"))),
            ("torchattacks {:.1f} s", g(EPYC, "jsma", "JSMA CIFAR CNN", "torchattacks")["extra"]["ms_per_image"] / 1e3),
            ("{:.0f}x", g(EPYC, "jsma", "JSMA CIFAR CNN", "nemesis_fast")["speedup"]),
        ],
        "certify (randomized smoothing), MNIST CNN, 40 images, n = 1,000": _certify_figures(EPYC, "({:.2f}x in bf16)"),
        "the same on an Intel Xeon with AVX-512 but no AVX512-BF16 (2026-12-07)": _certify_figures(
            XEON, "(bf16: {:.2f}x"
        ),
        # The drop-ins' table, its H200 column (the CPU columns' figures are BENCHMARKS.md's text: no JSON kept).
        **{
            f"{peer} `{name}`": [(fmt, h200_compat(f"{peer} {name}")["speedup"])]
            for peer, name, fmt in (
                ("torchattacks", "FGSM", "{:.2f}x"),
                ("torchattacks", "PGD", "{:.2f}x"),
                ("torchattacks", "RFGSM", "{:.2f}x"),
                ("torchattacks", "CW", "{:.2f}x"),
                ("torchattacks", "DeepFool", "{:.1f}x"),
                ("torchattacks", "JSMA", "{:.0f}x"),
                ("ART", "FastGradientMethod", "{:.2f}x"),
                ("ART", "ProjectedGradientDescent", "{:.2f}x"),
                ("ART", "DeepFool", "{:.2f}x"),
                ("ART", "SaliencyMapMethod", "{:.2f}x"),
                ("ART", "CarliniL2Method", "{:.1f}x"),
            )
        },
        "ART `GaussianAugmentation`": [
            (
                "{:.0f}x PyTorch path",
                g(H200, "compat", "ART GaussianAugmentation", "nemesis_fast.compat (PyTorch preprocessor path)")[
                    "speedup"
                ],
            ),
            (
                "{:.1f}x numpy call",
                g(H200, "compat", "ART GaussianAugmentation", "nemesis_fast.compat (numpy in/out)")["speedup"],
            ),
        ],
    }


def test_readmes_benchmark_figures_are_their_jsons():
    figures = _figures()
    assert len(figures) == 33
    for first_cell, expected in figures.items():
        cells = table_row(first_cell)
        # The drop-ins' table: the H200 column is the last; the benchmark tables: every cell of the row.
        drop_in = first_cell.startswith(("torchattacks `", "ART `"))
        text = cells[-1] if drop_in else " | ".join(cells[1:])
        for fmt, value in expected:
            shown = fmt.format(value).replace("e+", "e")  # 1.33e12, as README writes it
            assert shown in text, f"README's row {first_cell!r} should show {shown!r} (its JSON's value {value})"


def _results_table(path: Path) -> dict[str, list[str]]:
    """The black-box table of an evaluation's results.md: defense -> [clean, FGSM, R+FGSM, DeepFool, JSMA, C&W]."""
    section = path.read_text().split("## Black-box accuracy (%)")[1].split("\n## ")[0]
    rows = [
        line.strip("|").split("|") for line in section.splitlines() if line.startswith("| ") and "defense" not in line
    ]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows}


def _within_5(cells: list[str]) -> int:
    return sum(1 for cell in cells if re.fullmatch(r"[\d.]+ \([\d.]+, [+-][\d.]+\)", cell))


@pytest.mark.parametrize(
    "heading, run, within",
    [
        (
            "### The paper's experiment on MNIST",
            "paper-table",
            "**26 of 35 cells are within 5 points of the paper's.**",
        ),
        ("**From a source as weak as the authors'**", "paper-weak-source", "- 24 of 35 cells are within 5 points"),
    ],
)
def test_readmes_paper_tables_are_the_runs(heading, run, within):
    text = readme_text()
    section = text[text.index(heading) :]
    lines = section[section.index("| model") :].split("\n\n")[0].splitlines()[2:]
    results = _results_table(ROOT / "runs" / run / "results.md")
    assert len(lines) == len(results) == 7
    count = 0
    for line in lines:
        cells = [c.strip() for c in line.strip("|").split("|")]
        name, clean = re.fullmatch(r"(.*?)(?: \(([\d.]+)\))?", cells[0]).groups()
        assert clean is None or float(clean) == float(results[name][0]), f"{run}: {name}'s clean accuracy"
        for shown, cell in zip(cells[1:], results[name][1:]):
            value, rest = shown.split(" ", 1)
            assert float(value) == float(cell.split(" ")[0]) and rest == cell.split(" ", 1)[1], f"{run}: {name}"
        count += _within_5(cells[1:])
    assert re.search(r"(\d+) of 35", within)[1] == str(count) and within in section


def test_readmes_certified_accuracies_are_the_runs():
    section = (ROOT / "runs" / "paper-mnist" / "results.md").read_text().split("## Certified accuracy")[1]
    rows = {c[0].strip(): c[1:] for c in (line.strip("|").split("|") for line in section.splitlines()[4:11])}
    text = " ".join(readme_text().split())
    for name, shown in (("GDA + ReLU", "for GDA + ReLU"), ("GDA + BReLU", "for GDA + BReLU"), ("CNN", "for the CNN")):
        r05, r075 = (f"{float(rows[name][i]):.1f}%" for i in (2, 3))
        assert f"{r05} / {r075} {shown}" in text, f"README's certified accuracy of {name}: {r05} / {r075}"


def _section_table(text: str, heading: str) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the table of the results.md section whose heading starts with `heading`."""
    section = text.split(f"## {heading}")[1].split("\n## ")[0]
    lines = [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines() if line.startswith("| ")]
    return lines[0], lines[1:]


def test_readmes_white_box_figures_are_the_paper_runs():
    results = (ROOT / "runs" / "paper-mnist" / "results.md").read_text()
    header, rows = _section_table(results, "White-box PGD")
    pgd = {row[0]: dict(zip(header, row)) for row in rows}
    at = lambda name, eps: float(pgd[name][f"eps {eps}"])  # noqa: E731
    plain = [name for name in pgd if "masking" not in name]
    rest = [n for n in plain if n not in ("Feature squeezing", "GDA + ReLU")]
    minimal = {(r[0], r[1]): r for r in _section_table(results, "White-box minimal perturbation")[1]}
    median = lambda name, attack: float(minimal[(name, attack)][6])  # noqa: E731
    one_hot = re.search(r"FAIL \(([\d.]+)% of test images: gradient 0", results)[1]
    gda = [at("GDA + ReLU", 0.1), at("GDA + BReLU", 0.1)]
    text = " ".join(readme_text().split())
    for phrase in (
        f"GDA keeps {min(gda):.0f}-{max(gda):.0f}% under PGD at eps 0.1 where the CNN keeps {at('CNN', 0.1):.0f}%",
        f"every model but feature squeezing ({at('Feature squeezing', 0.3):.1f}%) and GDA + ReLU "
        f"({at('GDA + ReLU', 0.3):.1f}%) keeps {max(at(n, 0.3) for n in rest):.1f}% or less",
        f"GDA + BReLU keeps {at('GDA + BReLU (gradient masking)', 0.3):.1f}% under PGD at 0.3, through BPDA (ReLU's "
        f"gradient through the bound) {at('GDA + BReLU', 0.3):.1f}%",
        f"exactly one-hot on {one_hot}% of the test images",
        f"fools only {float(minimal[('GDA + ReLU', 'JSMA')][4]):.1f}% of it",
        f"median L2 {median('GDA + ReLU', 'DeepFool'):.2f} (GDA + ReLU) and {median('GDA + BReLU', 'DeepFool'):.2f} "
        f"(GDA + BReLU) under DeepFool against the CNN's {median('CNN', 'DeepFool'):.2f}, "
        f"{median('GDA + ReLU', 'C&W'):.2f} and {median('GDA + BReLU', 'C&W'):.2f} against "
        f"{median('CNN', 'C&W'):.2f} under C&W (confidence 0), and {median('GDA + BReLU', 'JSMA'):.0f} pixels "
        f"(GDA + BReLU) under JSMA against {median('CNN', 'JSMA'):.0f}",
    ):
        assert phrase in text, f"README should say {phrase!r} (runs/paper-mnist/results.md)"


def test_feature_squeezing_does_not_rescale_as_readme_says():
    from torch import nn

    from nemesis_fast.defenses import FeatureSqueezing

    phrase = (
        "its grid spans [0, 1] and it does not rescale: give it images in [0, 1], as its bit-depth reduction leaves"
    )
    assert phrase in " ".join(readme_text().split())
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 255
    for bits in (1, 3):
        squeezed = FeatureSqueezing(nn.Identity(), bits)(x)
        assert (squeezed - x).abs().max() <= 0.5  # [0, 255] images come out all but unchanged: no rescaling
