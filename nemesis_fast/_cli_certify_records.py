"""The certificates a `nemesis-fast certify` run keeps as it goes, so that an interrupted run resumes.

Each process keeps one record beside --out (OUT.partial.json; under torchrun, process r of W keeps
OUT.partial.r-of-W.json): the run's settings and a run of consecutive certificates, those of the images at positions
first, first + 1, ... of the run's test images. A run reads every record of the same settings beside --out, whatever
the number of processes that wrote them, and certifies only the images none of them holds.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

Certificates = dict[int, tuple[int, float]]  # position among the run's images -> (prediction, radius)


def record_path(out: str, rank: int = 0, world_size: int = 1) -> Path:
    """Where process `rank` of `world_size` keeps its certificates as it goes."""
    name = "partial" if world_size == 1 else f"partial.{rank}-of-{world_size}"
    return Path(f"{out}.{name}.json").expanduser()


def _record_name(out: str) -> re.Pattern:
    return re.compile(re.escape(Path(out).expanduser().name) + r"\.partial(\.\d+-of-\d+)?\.json")


def is_record_path(out: str, path: str) -> bool:
    """Whether `path` has the name of a record of runs writing `out`, in its folder (such a file is read, and
    removed, by those runs)."""
    out_path, given = Path(out).expanduser(), Path(path).expanduser()
    return bool(_record_name(out).fullmatch(given.name)) and out_path.parent.resolve() == given.parent.resolve()


def record_paths(out: str) -> list[Path]:
    """The records of runs writing `out` that exist now, of any number of processes, in order of their names."""
    folder, pattern = Path(out).expanduser().parent, _record_name(out)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if pattern.fullmatch(p.name) and p.is_file())


def describe(out: str, records: list[Path]) -> str:
    """The records of `out` as a message names them: the file, or how many and their pattern."""
    return str(records[0]) if len(records) == 1 else f"{len(records)} files {out}.partial*.json"


def load_certificates(out: str, identity: dict[str, Any], images: int, num_classes: int) -> tuple[Certificates, list]:
    """The certificates that the records beside `out` hold, and those records' paths. A record of other settings is
    refused (it is another run's work), and so is one that does not hold certificates of the run's `images` images
    (a prediction in -1..num_classes - 1 and a radius >= 0 for each). Where two records hold the same image, the
    first by name counts (the same settings give the same certificate on the same kind of device)."""
    known: Certificates = {}
    paths = record_paths(out)
    for path in paths:
        first, prediction, radius = _read(path, identity, images, num_classes)
        for i, certificate in enumerate(zip(prediction, radius), start=first):
            known.setdefault(i, certificate)
    return known, paths


def record(identity: dict[str, Any], first: int, prediction: list[int], radius: list[float]) -> dict[str, Any]:
    """A record's content: the certificates of the images at positions first, first + 1, ..."""
    return {"settings": identity, "first": first, "prediction": prediction, "radius": radius}


def _read(path: Path, identity: dict[str, Any], images: int, num_classes: int) -> tuple[int, list, list]:
    try:
        kept = json.loads(path.read_text())
        settings, prediction, radius = kept["settings"], kept["prediction"], kept["radius"]
        first = kept.get("first", 0)  # records written before there were several processes: from the first image
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"--out: {path} is not the record of an interrupted certify; move it away") from error
    if settings != identity:
        differ = ", ".join(
            sorted(k for k in identity if not isinstance(settings, dict) or settings.get(k) != identity[k])
        )
        raise ValueError(
            f"--out: {path} holds an interrupted run with other settings ({differ}); finish it with those "
            "settings, or choose another --out, or move it away"
        )
    if not (
        type(first) is int
        and first >= 0
        and isinstance(prediction, list)
        and isinstance(radius, list)
        and len(prediction) == len(radius) <= images - first
        and all(type(p) is int and -1 <= p < num_classes for p in prediction)
        and all(type(r) in (int, float) and r >= 0 for r in radius)
    ):
        raise ValueError(
            f"--out: {path} does not hold the certificates of at most {images} images (a prediction and a "
            "radius each); it was not written by this command: move it away"
        )
    return first, prediction, radius
