"""What an out_dir or cache_dir may be: another seed's results are another run's (only where and how fast a run goes
are no settings), and a cache_dir a run would write is checked writable even where it exists (only a look at the
cache may take a read-only one)."""

from __future__ import annotations

import json
import os

import pytest

from nemesis_fast import _io
from nemesis_fast.evaluation.config import ConfigError, EvalConfig
from nemesis_fast.evaluation.folders import check_folders, check_out_dir


@pytest.mark.parametrize("key,value", [("seed", 1), ("batch_size", 7), ("test_samples", 5)])
def test_results_of_a_run_with_another_top_level_setting_are_not_overwritten(tmp_path, key, value):
    out = tmp_path / "out"
    out.mkdir()
    config = EvalConfig(out_dir=str(out))
    earlier = config.to_dict()
    assert earlier[key] != value
    (out / "results.json").write_text(json.dumps({"config": {**earlier, "device": "cuda", "threads": 3}}))
    check_out_dir(config)  # the same settings, another device and thread count: it resumes
    (out / "results.json").write_text(json.dumps({"config": {**earlier, key: value}}))
    with pytest.raises(ConfigError, match=f"other settings \\({key}: {value} -> "):
        check_out_dir(config)


def test_an_existing_cache_folder_a_run_cannot_write_is_refused(tmp_path, monkeypatch):
    cache = tmp_path / "shared-cache"
    cache.mkdir()
    monkeypatch.setattr(_io.os, "access", lambda path, mode: os.fspath(path) != os.fspath(cache))
    config = EvalConfig(out_dir=str(tmp_path / "out"), cache_dir=str(cache))
    with pytest.raises(ConfigError, match="cache_dir: the folder .*shared-cache' is not writable"):
        check_folders(config)
    check_folders(config, cached_only=True)  # a look only reads it
