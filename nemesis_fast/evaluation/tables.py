"""The evaluation's tables, each as (header, rows) of strings: the black-box table beside the paper's, the eps
sweeps with the eps at which each paper cell is met, the authors' own curves beside the run's, the white-box
grid, the minimal perturbations, the gradient-masking checks, the certificates and the perturbation sizes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .certified import certified_table, certified_title
from .config import ATTACK_LABELS, DEFENSE_LABELS, MASKED, defense_label
from .paper import AUTHORS_EPS, TOLERANCE, authors_curve, comparison, eps_meeting_paper, paper_value

if TYPE_CHECKING:
    from .report import Cell, Results


def blackbox_table(results: Results) -> tuple[list[str], list[list[str]]]:
    """Rows: defenses; columns: clean accuracy and one per black-box attack (accuracy in percent; the header says
    where an attack ran on the first N test images only). On MNIST each cell also shows the paper's value and the
    difference, with "!" where it is more than 5 points."""
    attacks = results.config["blackbox_attacks"]
    every = results.blackbox()
    header = ["defense", "clean"]
    header += [ATTACK_LABELS[a] + _fewer_images([c for c in every if c.attack == a], results) for a in attacks]
    rows = []
    for defense in results.config["defenses"]:
        cells = {c.attack: c for c in every if c.defense == defense}
        row = [DEFENSE_LABELS[defense], _pct(results.clean_accuracy.get(defense))]
        for attack in attacks:
            text = _pct(cells[attack].accuracy) if attack in cells else ""
            versus = comparison(results.paper_dataset, defense, attack, cells[attack].accuracy) if text else None
            if versus is not None:
                mark = "" if versus["within"] else " !"
                text += f" ({versus['paper']:.2f}, {versus['difference']:+.1f}{mark})"
            row.append(text)
        rows.append(row)
    return header, rows


def sweep_table(results: Results, attack: str) -> tuple[list[str], list[list[str]]]:
    """Rows: defenses; columns: black-box accuracy (%) at each eps of the run, then (MNIST) the paper's value and
    the eps at which the sweep meets it, and a last row counting the cells within 5 points of the paper's at
    each eps (no single eps need fit a whole column)."""
    cells = results.blackbox_sweep(attack)
    eps_values = sorted({c.eps for c in cells})
    dataset = results.paper_dataset
    header = ["defense", *(f"{e:g}" for e in eps_values)]
    if dataset == "mnist":
        header += ["paper", "meets paper at eps"]
    rows = []
    for defense in results.config["defenses"]:
        mine = {c.eps: c.accuracy for c in cells if c.defense == defense}
        row = [DEFENSE_LABELS[defense], *(_pct(mine.get(e)) for e in eps_values)]
        paper = paper_value(dataset, defense, attack)
        if dataset == "mnist":
            met = eps_meeting_paper(list(mine.items()), paper) if paper is not None and mine else None
            if met is None:
                text = "never" if paper is not None and mine else ""
            elif mine[min(mine)] <= paper:
                text = f"<= {min(mine):g}"  # already at or below the paper's value at the smallest eps
            else:
                text = f"{met:.3f}"
            row += [_pct(paper), text]
        rows.append(row)
    if dataset == "mnist" and cells:
        within = []
        for e in eps_values:
            versus = [comparison(dataset, c.defense, attack, c.accuracy) for c in cells if c.eps == e]
            versus = [v for v in versus if v is not None]
            within.append(f"{sum(v['within'] for v in versus)}/{len(versus)}" if versus else "")
        rows.append([f"within {TOLERANCE:g} points of the paper", *within, "", ""])
    return header, rows


def authors_table(results: Results, setting: str, attack: str) -> tuple[list[str], list[list[str]]]:
    """Rows: defenses with a curve in the authors' plots (MNIST, FGSM and R+FGSM: :data:`.paper.AUTHORS_MNIST_CURVES`);
    columns: the eps of their plots, each "authors / this run" in percent (only the authors' value where the run
    has no cell at that eps, "-" where their plot hides the point). White-box, the authors attacked every model
    through its own gradient: a defense's row of this run is its gradient-masking row where it has one (its
    own gradient), except feature squeezing's, which they applied outside the network (so through BPDA)."""
    dataset = results.paper_dataset
    cells = results.blackbox_sweep(attack) if setting == "blackbox" else results.whitebox(attack, setting)
    masked = results.whitebox(attack, MASKED) if setting == "whitebox" else []
    rows = []
    for defense in results.config["defenses"]:
        theirs = authors_curve(dataset, setting, attack, defense)
        if not theirs:
            continue
        own = [c for c in masked if c.defense == defense] if defense != "feature_squeezing" else []
        chosen = own or [c for c in cells if c.defense == defense]
        mine = {round(c.eps, 6): c.accuracy for c in chosen}
        label = defense_label(defense, chosen[0].setting if chosen else setting)
        rows.append((label, theirs, mine))
    eps_values = AUTHORS_EPS if rows else ()
    header = ["defense", *(f"{e:g}" for e in eps_values)]
    table = []
    for label, theirs, mine in rows:
        texts = []
        for e in eps_values:
            ours = mine.get(round(e, 6))
            text = f"{theirs[e]:.1f}" if e in theirs else "-"
            texts.append(text if ours is None else f"{text} / {ours:.1f}")
        table.append([label, *texts])
    return header, table


def perturbation_table(results: Results) -> tuple[list[str], list[list[str]]]:
    """Rows: (defense, attack); the minimal white-box perturbation's quartiles ("inf": the attack failed on at
    least that fraction of the images)."""
    header = ["defense", "attack", "norm", "images", "fooled %", "q25", "median", "q75"]
    rows = [
        [
            defense_label(p.defense, p.setting),
            ATTACK_LABELS[p.attack],
            p.norm.upper(),
            str(p.samples),
            _pct(p.success),
            *(f"{v:.3g}" for v in (p.q25, p.median, p.q75)),
        ]
        for p in sorted(
            results.perturbations,
            key=lambda p: (p.attack, p.setting == MASKED, results.config["defenses"].index(p.defense)),
        )
    ]
    return header, rows


def checks_table(results: Results) -> tuple[list[str], list[list[str]]]:
    """The gradient-masking checks of every defense (:mod:`.checks`)."""
    from .checks import gradient_masking_checks

    header = ["defense", "PGD <= FGSM", "white-box <= black-box", "falls to chance", "own gradient <= row"]
    header += ["JSMA's softmax gradient", "FGSM's zero gradient", "flag"]
    rows = [
        [DEFENSE_LABELS[r.defense], r.iterative, r.whitebox, r.chance, r.own_gradient, r.softmax, r.zero_gradient]
        + ["FLAGGED" if r.flagged else ""]
        for r in gradient_masking_checks(results)
    ]
    return header, rows


def whitebox_table(results: Results, attack: str) -> tuple[list[str], list[list[str]]]:
    """Rows: defenses (then gradient-masking rows where present); columns: eps; accuracy in percent."""
    eps_values = results.config["whitebox_eps"]
    header = ["defense", *(f"eps {e:.3g}" for e in eps_values)]
    rows = []
    for setting in ("whitebox", MASKED):
        for defense in results.config["defenses"]:
            cells = {c.eps: c for c in results.whitebox(attack, setting) if c.defense == defense}
            if cells:
                rows.append(
                    [
                        defense_label(defense, setting),
                        *(_pct(cells[e].accuracy) if e in cells else "" for e in eps_values),
                    ]
                )
    return header, rows


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _fewer_images(cells: list[Cell], results: Results) -> str:
    """ " (first N images)" where `cells` were all computed on the first N test images, fewer than the run's others
    (C&W and PGD may be limited so), else ""."""
    counts = {c.samples for c in cells}
    everything = max((c.samples for c in results.cells), default=0)
    if len(counts) == 1 and 0 < min(counts) < everything:
        return f" (first {min(counts):,} images)"
    return ""


def sections(results: Results) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every table after the black-box one that has rows."""
    out = []

    def add_authors(setting: str, attack: str) -> None:
        header, rows = authors_table(results, setting, attack)
        if rows:
            name = {"blackbox": "Black-box", "whitebox": "White-box"}[setting]
            title = f"{name} {ATTACK_LABELS[attack]}: the authors' curves beside this run's"
            out.append((title + " (authors / this run; their plots of July 2017, read off)", header, rows))

    for attack in ("fgsm", "rfgsm"):
        if results.config["blackbox_eps"] and results.blackbox_sweep(attack):
            title = f"Black-box {ATTACK_LABELS[attack]} accuracy (%) against eps (the eps sweep)"
            out.append((title, *sweep_table(results, attack)))
            add_authors("blackbox", attack)
    for attack in results.config["whitebox_attacks"]:
        header, rows = whitebox_table(results, attack)
        if rows:
            fewer = _fewer_images([c for c in results.cells if c.attack == attack and c.setting != "blackbox"], results)
            out.append((f"White-box {ATTACK_LABELS[attack]} accuracy (%) against eps{fewer}", header, rows))
            add_authors("whitebox", attack)
    if results.perturbations:
        title = "White-box minimal perturbation (over correctly classified images; inf: not fooled)"
        out.append((title, *perturbation_table(results)))
    header, rows = checks_table(results)
    if any(r[1:4] != ["not run"] * 3 for r in rows):
        out.append(("Gradient-masking checks (Athalye et al. 2018)", header, rows))
    if results.certified:
        out.append((certified_title(results.certified), *certified_table(results.certified)))
    return out


def norms_table(results: Results) -> tuple[list[str], list[list[str]]]:
    header = ["defense", "attack", "setting", "eps", "accuracy", "mean L2", "mean Linf", "mean L0", "seconds"]
    rows = [
        [
            DEFENSE_LABELS[c.defense],
            ATTACK_LABELS[c.attack],
            c.setting,
            "" if c.eps is None else f"{c.eps:g}",
            _pct(c.accuracy),
            f"{c.mean_l2:.3f}",
            f"{c.mean_linf:.3f}",
            f"{c.mean_l0:.1f}",
            f"{c.seconds:.1f}",
        ]
        for c in results.cells
    ]
    return header, rows
