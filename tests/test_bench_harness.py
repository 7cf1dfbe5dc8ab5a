"""The benchmark harness and the suites' own timing: speed-ups on the same images, providers that fail, warm-up
calls, rounds, the figures a row carries and the JSON they are written to; the bench command's one-line errors."""

from __future__ import annotations

import json
import math

import pytest
import torch

from nemesis_fast.bench import harness
from nemesis_fast.bench.harness import (
    Case,
    Report,
    Row,
    ms_per_image_on,
    problem_size,
    record_same_images,
    same_images_speedup,
    time_interleaved,
    write_reports,
)


def row(images: int, ms_per_image: float, same: tuple[int, float] | None = None) -> Row:
    """A row over `images` images; `same`: (images, ms per image) on the first images of the batch."""
    made = Row("case", "provider", images * ms_per_image, extra={"images": images, "ms_per_image": ms_per_image})
    if same:
        record_same_images(made, same[0], same[0] * same[1])
    return made


def test_speedup_is_taken_on_the_images_both_attacked():
    peer = row(2, 300.0)  # the peer attacked the first 2 images of the batch
    ours = row(8, 10.0, same=(2, 60.0))  # the first 2 are harder than the batch's average
    assert same_images_speedup(peer, ours) == pytest.approx(5.0)  # not 300 / 10
    assert same_images_speedup(ours, peer) == pytest.approx(0.2)
    assert ms_per_image_on(ours, 8) == 10.0 and ms_per_image_on(ours, 2) == 60.0


def test_speedup_on_equal_batches_and_missing_times():
    assert same_images_speedup(row(8, 30.0), row(8, 10.0)) == pytest.approx(3.0)
    assert same_images_speedup(row(2, 300.0), row(8, 10.0)) is None  # no time on the peer's images: no claim
    assert ms_per_image_on(row(8, 10.0), 4) is None


def test_a_suites_size_is_its_default_or_a_count_of_at_least_one():
    from nemesis_fast.bench import bounded_relu, gaussian_augment

    assert problem_size(None, 128) == 128 and problem_size(3, 128) == 3
    for suite in (bounded_relu, gaussian_augment):  # before any work: 0 is no longer read as "the default"
        with pytest.raises(ValueError, match="numel must be >= 1, got 0"):
            suite.run("cpu", numel=0)
    with pytest.raises(TypeError, match="numel must be an int, got float"):
        problem_size(1.5, 128)


# A provider that raises: a row saying so, and the suite goes on.


def _broken(message: str = "peer blew up"):
    def fail(*_args, **_kwargs):
        raise RuntimeError(message)

    return fail


def test_a_provider_that_raises_becomes_a_failed_row_and_the_case_goes_on():
    calls = {"late": 0}

    def fails_on_third_call():  # passes the 2 warm-up calls, fails in the first timed round
        calls["late"] += 1
        if calls["late"] >= 3:
            raise ValueError("bad shape\nsecond line of the message")

    report = Report("demo", "cpu")
    providers = {"ours": lambda: None, "peer": _broken(), "late": fails_on_third_call, "missing": "not installed"}
    rows = report.run(Case("case", providers, baseline="peer", min_seconds=0.0))
    by = {row.provider: row for row in rows}
    assert [row.provider for row in rows] == list(providers)
    assert by["peer"].ms is None and by["peer"].note == "failed: RuntimeError: peer blew up"
    assert by["late"].ms is None and by["late"].note == "failed: ValueError: bad shape"
    assert calls["late"] == 3  # dropped from the rounds after its failure
    assert by["ours"].ms is not None and by["ours"].speedup is None  # no baseline time: no ratio
    assert by["missing"].note == "not installed"
    assert report.rows == rows and "failed: RuntimeError: peer blew up" in report.table()


def test_time_interleaved_reports_failures_only_when_asked():
    failures: dict[str, str] = {}
    ms = time_interleaved({"ok": lambda: None, "bad": _broken()}, torch.device("cpu"), failures=failures)
    assert set(ms) == {"ok"} and failures == {"bad": "failed: RuntimeError: peer blew up"}
    with pytest.raises(RuntimeError, match="peer blew up"):  # without a failures dict, as before
        time_interleaved({"bad": _broken()}, torch.device("cpu"))
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C is never a provider's failure

        def interrupted():
            raise KeyboardInterrupt

        time_interleaved({"ctrl-c": interrupted}, torch.device("cpu"), failures={})


def test_a_failing_provider_does_not_end_the_later_suites(tmp_path, monkeypatch, capsys):
    from nemesis_fast import bench
    from nemesis_fast.cli import main

    def suite(device, **kwargs):
        report = Report("fake", device)
        report.run(Case("case", {"ours": lambda: None, "peer": _broken()}, baseline="peer", min_seconds=0.0))
        return report

    monkeypatch.setattr(bench, "suite", lambda name: suite)
    out = tmp_path / "bench.json"
    assert main(["bench", "bounded_relu", "training", "--device", "cpu", "--json", str(out)]) == 0
    assert capsys.readouterr().out.count("failed: RuntimeError: peer blew up") == 2
    written = json.loads(out.read_text())
    assert written["complete"] is True and len(written["reports"]) == 2
    assert {row["note"] for report in written["reports"] for row in report["rows"]} >= {
        "failed: RuntimeError: peer blew up"
    }


# The figures a row carries: what its throughput counts, the baseline of its speed-up; no NaN in the JSON.


def test_rows_carry_their_item_name_and_baseline(tmp_path):
    report = Report("demo", "cpu")
    case = Case("search", {"fast": lambda: None, "slow": lambda: None}, "slow", items=1000, item_name="pair")
    case.min_seconds = 0.0
    rows = report.run(case)
    assert all(row.item_name == "pair" and row.baseline == "slow" and row.items_per_s > 0 for row in rows)
    table = report.table()
    assert "pairs/s" in table and "items/s" not in table
    report.write_json(tmp_path / "report.json")
    (first, _) = json.loads((tmp_path / "report.json").read_text())["rows"]
    assert first["item_name"] == "pair" and first["baseline"] == "slow" and first["items_per_s"] > 0


def test_bench_json_writes_figures_that_are_not_finite_as_null_and_says_where(tmp_path):
    """Strict JSON (NaN is not JSON), and no measured row lost for one figure that is not a number."""
    report = Report("demo", "cpu")
    report.add(Row("case", "provider", 1.0, extra={"abstain_se": math.nan}))
    with pytest.warns(UserWarning, match=r"rows\[0\]\.extra\.abstain_se = nan not a finite number, written as null"):
        report.write_json(tmp_path / "report.json")
    with pytest.warns(UserWarning, match=r"reports\[0\]\.rows\[0\]\.extra\.abstain_se"):
        write_reports(tmp_path / "reports.json", [report])
    for name, rows in (("report.json", lambda d: d["rows"]), ("reports.json", lambda d: d["reports"][0]["rows"])):
        written = json.loads((tmp_path / name).read_text(), parse_constant=lambda c: pytest.fail(f"{c} written"))
        assert rows(written)[0]["extra"]["abstain_se"] is None and rows(written)[0]["ms"] == 1.0
    assert report.rows[0].extra["abstain_se"] != report.rows[0].extra["abstain_se"]  # the report itself is kept


def test_certify_figures_that_do_not_exist_are_none_not_nan():
    from nemesis_fast.bench import certify

    one = certify._summary(torch.tensor([3]), torch.tensor([0.5]), torch.tensor([3]))
    assert one["abstain_se"] is None and one["mean_radius_se"] is None and one["accuracy"] == 1.0
    paired = certify._paired({"prediction": torch.tensor([-1]), "radius": torch.tensor([0.0])},
                             {"prediction": torch.tensor([2]), "radius": torch.tensor([0.4])})  # fmt: skip
    assert paired["abstain_diff_se"] is None and paired["abstain_z"] is None and paired["mean_radius_z"] is None
    assert certify._agreement(paired).startswith("no sampling error to judge by")
    same = certify._paired({"prediction": torch.tensor([1, 2]), "radius": torch.tensor([0.1, 0.2])},
                           {"prediction": torch.tensor([1, 2]), "radius": torch.tensor([0.1, 0.2])})  # fmt: skip
    assert same["abstain_z"] == 0.0 and same["mean_radius_z"] == 0.0
    assert not any(isinstance(v, float) and not math.isfinite(v) for v in [*one.values(), *paired.values()])


def test_certify_times_the_providers_that_do_not_fail():
    from nemesis_fast.bench import certify

    calls = []
    providers = {
        "ours": lambda warmup=False: calls.append(("ours", warmup)),
        "fails to warm up": _broken("no statsmodels"),
        "ART (missing)": "ART not installed",
    }
    rows = certify._time("case", providers, torch.device("cpu"), 4, "fails to warm up")
    by = {row.provider: row for row in rows}
    assert calls == [("ours", True), ("ours", False)]
    assert by["ours"].ms > 0 and by["ours"].items_per_s > 0 and by["ours"].item_name == "image"
    assert by["fails to warm up"].note == "failed: RuntimeError: no statsmodels" and by["ours"].speedup is None
    assert by["ART (missing)"].note == "ART not installed"


# A CUDA device other than the current one: its events record on it.


def test_cuda_timings_record_on_the_device_timed(monkeypatch):
    current: list[int | None] = []  # the devices made current, innermost last

    class FakeDevice:  # torch.cuda.device
        def __init__(self, device):
            self.index = torch.device(device).index

        def __enter__(self):
            current.append(self.index)

        def __exit__(self, *exc):
            current.pop()
            return False

    recorded: list[int | None] = []

    class FakeEvent:  # torch.cuda.Event: records on the current device's stream
        def __init__(self, enable_timing=False):
            pass

        def record(self):
            recorded.append(current[-1] if current else None)

        def synchronize(self):
            pass

        def elapsed_time(self, end):
            return 1.0

    monkeypatch.setattr(torch.cuda, "device", FakeDevice)
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(harness, "synchronize", lambda device: None)
    ms = harness.time_ms(lambda: None, torch.device("cuda", 1), warmup=0, min_reps=2, max_reps=2, min_seconds=0.0)
    assert ms == 1.0 and recorded == [1, 1, 1, 1]  # begin and end of 2 calls, all on cuda:1
    assert not current
    assert harness.time_ms(lambda: None, torch.device("cpu"), warmup=0, min_reps=1, min_seconds=0.0) >= 0
    assert len(recorded) == 4  # the CPU is timed by the wall clock, with no device made current


# The bench command: devices the suites time, host memory.


@pytest.mark.parametrize("device", ["meta", "mps", "xpu"])
def test_bench_refuses_devices_it_does_not_time_in_one_line(device, monkeypatch):
    from nemesis_fast.cli import main

    monkeypatch.setattr("nemesis_fast.bench.suite", lambda name: pytest.fail("benchmarked"))
    with pytest.raises(SystemExit, match=f"--device must be cpu or cuda\\[:N\\] .*, got '{device}'$"):
        main(["bench", "bounded_relu", "--device", device])


def test_bench_out_of_host_memory_is_one_line_naming_size(monkeypatch):
    from nemesis_fast.cli import main

    def huge(device, numel=None):
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:121] data. DefaultCPUAllocator: can't allocate memory: you tried to "
            "allocate 1228800000000 bytes. Error code 12 (Cannot allocate memory)"
        )

    monkeypatch.setattr("nemesis_fast.bench.suite", lambda name: huge)
    expected = "gaussian_augment ran out of host memory at --size 100000000; give a smaller --size"
    with pytest.raises(SystemExit, match=expected):
        main(["bench", "gaussian_augment", "--size", "100000000", "--device", "cpu"])
    monkeypatch.setattr("nemesis_fast.bench.suite", lambda name: _broken("some other error"))
    with pytest.raises(RuntimeError, match="some other error"):  # not a memory error: not hidden
        main(["bench", "gaussian_augment", "--device", "cpu"])


# The suites that time outside Report.run: attacks, compat, jsma.


def _toy_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 10)).eval()


def _toy_batch(images: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(images, 3, 2, 2, generator=torch.Generator().manual_seed(0)), torch.zeros(
        images, dtype=torch.long
    )


def _recording_attack(calls: list, name: str, fail_on: int | None = None):
    """An attack recording (name, images) per call; raising on call number `fail_on` (1-based)."""

    def attack(images, labels, *targets):
        calls.append((name, len(images)))
        if fail_on is not None and sum(1 for call in calls if call[0] == name) >= fail_on:
            raise RuntimeError(f"{name} broke")
        return (images + 0.01).clamp(0, 1)

    return attack


def test_attacks_measure_turns_a_failing_provider_into_a_row(monkeypatch):
    from nemesis_fast.bench import attacks

    calls: list = []
    toys = {
        "nemesis_fast": _recording_attack(calls, "nemesis_fast"),
        "torchattacks": _recording_attack(calls, "torchattacks", fail_on=1),  # in its warm-up
        "ART": _recording_attack(calls, "ART", fail_on=3),  # in its timed rounds
        "bare fwd+bwd": _recording_attack(calls, "bare fwd+bwd"),
    }
    monkeypatch.setattr(attacks, "providers", lambda *args: toys)
    x, y = _toy_batch()
    spec = attacks.Spec("FGSM", {"eps": 0.1}, "bare fwd+bwd")
    rows = {row.provider: row for row in attacks.measure(spec, _toy_model(), x, y, 10, "FGSM", slow_limit=2)}
    assert list(rows) == list(toys)
    assert rows["torchattacks"].ms is None and rows["torchattacks"].note == "failed: RuntimeError: torchattacks broke"
    assert rows["ART"].ms is None and rows["ART"].note == "failed: RuntimeError: ART broke"
    assert sum(1 for call in calls if call[0] == "ART") == 3  # no call after its failure
    ours = rows["nemesis_fast"]
    assert ours.ms > 0 and ours.speedup > 0 and ours.baseline == "bare fwd+bwd" and ours.item_name == "image"


def test_attacks_fast_cases_are_timed_for_the_harness_rounds_and_seconds(monkeypatch):
    from nemesis_fast.bench import attack_providers, attacks

    seen: list[dict] = []

    def recording(fns, device, **kwargs):
        seen.append(kwargs)
        for fn in fns.values():  # one call each, for the rows' results
            fn()
        return dict.fromkeys(fns, 1.0)

    monkeypatch.setattr(attacks, "time_interleaved", recording)
    x, y = _toy_batch()
    calls: list = []
    toys = {name: _recording_attack(calls, name) for name in attack_providers.PROVIDERS}
    monkeypatch.setattr(attacks, "providers", lambda *args: toys)
    fgsm = attacks.Spec("FGSM", {"eps": 0.1}, "bare fwd+bwd")
    attacks.measure(fgsm, _toy_model(), x, y, 10, "FGSM", slow_limit=2)
    timed = seen[0]
    assert timed.get("min_reps", 5) >= 5 and timed.get("min_seconds", 0.5) >= 0.5 and "max_reps" not in timed
    seen.clear()
    deepfool = attacks.Spec("DeepFool", {}, "ART", ("torchattacks",))
    attacks.measure(deepfool, _toy_model(), x, y, 10, "DeepFool", slow_limit=2)
    assert seen[0]["min_reps"] == seen[0]["max_reps"] == 1  # a slow peer: one round
    seen.clear()
    attacks.measure(fgsm, _toy_model(), x, y, 10, "FGSM", slow_limit=2, reps=1)  # the MNIST rows: one round
    assert seen[0]["max_reps"] == 1


def test_attacks_names_are_checked_and_a_plain_string_is_one_name(monkeypatch):
    from nemesis_fast.bench import attacks

    monkeypatch.delenv("NEMESIS_FAST_MNIST", raising=False)  # which would add its MNIST rows

    for wrong in (("fgsm",), ("CW",), ("FGSM", "nope"), ()):
        with pytest.raises(ValueError, match="choose from FGSM, R\\+FGSM, PGD, DeepFool, CW-L2|attacks is empty"):
            attacks.run("cpu", numel=1, attacks=wrong)
    measured = []
    monkeypatch.setattr(attacks, "measure", lambda spec, *args, **kwargs: measured.append(spec.name) or [])
    attacks.run("cpu", numel=1, attacks="R+FGSM")
    assert measured == ["R+FGSM"]  # not FGSM as well
    measured.clear()
    attacks.run("cpu", numel=1, attacks=["PGD", "FGSM"])
    assert measured == ["FGSM", "PGD"]


def test_an_unreadable_mnist_folder_is_a_note_row(tmp_path, monkeypatch):
    from nemesis_fast.bench import attacks, jsma

    empty = tmp_path / "mnist"
    empty.mkdir()
    (empty / "train-images-idx3-ubyte.gz").write_bytes(b"")
    for root in (tmp_path / "missing", empty):
        reason = attacks.mnist_sets(root)
        assert isinstance(reason, str) and reason.startswith(f"skipped: MNIST could not be read from '{root}'")
    monkeypatch.setattr(attacks, "measure", lambda *args, **kwargs: [])
    report = attacks.run("cpu", numel=1, attacks="FGSM", mnist_root=str(tmp_path / "missing"))
    (row,) = report.rows
    assert row.ms is None and "FileNotFoundError" in row.note
    for stage in ("search_rows", "attack_rows", "imagenet_row"):
        monkeypatch.setattr(jsma, stage, lambda *args, **kwargs: None)
    monkeypatch.setenv("NEMESIS_FAST_MNIST", str(empty))
    (row,) = jsma.run("cpu", sizes=(), attack_images=1).rows
    assert row.case == "JSMA MNIST CNN (trained)" and row.ms is None and row.note.startswith("skipped: MNIST")


def test_compat_warms_both_sides_alike_and_reports_a_failing_side():
    from nemesis_fast.bench import compat

    x, y = _toy_batch()
    calls: list = []
    pair = compat.Pair(
        "slow case",
        lambda: _recording_attack(calls, "peer"),
        lambda: _recording_attack(calls, "ours"),
        peer_images=2,
        rounds=1,
    )
    report = Report("compat", "cpu")
    compat.measure_pair(report, pair, x, y)
    # each side's first call is a one-image warm-up; then one timed call each (ours on the batch and the peer's images)
    assert calls[:3] == [("peer", 1), ("ours", 1), ("ours", 1)]
    assert sorted(calls[3:]) == [("ours", 2), ("ours", 4), ("peer", 2)]
    peer, ours = report.rows
    assert ours.speedup > 0 and ours.extra["max_diff"] == 0 and ours.baseline == "peer"
    calls.clear()
    failing = compat.Pair(
        "failing peer", lambda: _recording_attack(calls, "peer", fail_on=2), lambda: _recording_attack(calls, "ours")
    )
    compat.measure_pair(report, failing, x, y)
    peer, ours = report.rows[2:]
    assert peer.ms is None and peer.note == "failed: RuntimeError: peer broke"
    assert ours.ms > 0 and ours.speedup is None and "max_diff" not in ours.extra
    unbuildable = compat.Pair(
        "unbuildable", _broken("bad argument"), lambda: _recording_attack(calls, "ours"), rounds=1
    )
    compat.measure_pair(report, unbuildable, x, y)
    assert report.rows[-2].note == "failed: RuntimeError: bad argument" and report.rows[-1].ms > 0


def _jsma_rows(monkeypatch, fail: dict[str, int]) -> tuple[dict[str, Row], list]:
    """bench.jsma's attack rows with recording attacks (4 images, torchattacks on 1, ART on 2), each provider
    failing at its call number `fail[provider]`: the rows by provider, and the calls."""
    from nemesis_fast.bench import jsma

    calls: list = []
    monkeypatch.setattr(
        jsma, "attack_provider", lambda provider, *args: _recording_attack(calls, provider, fail.get(provider))
    )
    x, y = _toy_batch()
    report = Report("jsma", "cpu")
    jsma.attack_rows(report, "toy JSMA", _toy_model(), x, y, {"torchattacks": 1, "ART": 2})
    return {row.provider: row for row in report.rows}, calls


def test_jsma_warms_every_provider_up_before_timing_it(monkeypatch):
    rows, calls = _jsma_rows(monkeypatch, {})
    for provider in ("nemesis_fast", "torchattacks", "ART"):
        assert [images for name, images in calls if name == provider][0] == 1  # the warm-up: one image, first
    assert [images for name, images in calls if name == "nemesis_fast"] == [1, 4, 1]  # warm-up, batch, baseline's
    assert rows["nemesis_fast"].speedup > 0 and rows["torchattacks"].speedup == pytest.approx(1.0)


def test_jsma_reports_a_failing_provider_and_goes_on(monkeypatch):
    rows, calls = _jsma_rows(monkeypatch, {"ART": 2, "torchattacks": 1})  # ART in its timed call, the other warming
    assert rows["ART"].ms is None and rows["ART"].note == "failed: RuntimeError: ART broke"
    assert rows["torchattacks"].note == "failed: RuntimeError: torchattacks broke"
    assert rows["nemesis_fast"].ms > 0 and rows["nemesis_fast"].speedup is None  # the baseline failed: no ratio
