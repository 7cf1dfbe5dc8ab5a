"""How the drop-ins import their peer library: a missing package, a package that is installed but fails to import,
and a version other than the one reproduced. Fake peer modules in a temporary folder: no peer library needed."""

from __future__ import annotations

import sys
import warnings

import pytest

from nemesis_fast.compat._peer import import_peer


@pytest.fixture
def peer_folder(tmp_path, monkeypatch):
    """A folder on sys.path for fake peer packages; the modules imported from it are forgotten afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [name for name in sys.modules if name.startswith("nemesis_fake_peer")]:
        del sys.modules[name]


def _package(folder, name: str, source: str) -> None:
    (folder / name).mkdir()
    (folder / name / "__init__.py").write_text(source)


def test_a_missing_peer_is_named_with_the_command_that_installs_it(peer_folder):
    with pytest.raises(ImportError, match=r"needs the package 'fake-peer', which is not installed: pip install"):
        import_peer("nemesis_fake_peer_absent", "fake-peer", ("1.0",), "adapter")


def test_an_installed_peer_that_fails_to_import_is_not_called_missing(peer_folder):
    """ART 1.17 imports pkg_resources, which setuptools 81 and later no longer ship: the package is there, and
    installing it again would not help, so the error says what failed instead."""
    _package(peer_folder, "nemesis_fake_peer_broken", "import nemesis_fake_dependency_absent\n")
    with pytest.raises(ImportError, match="installed but fails to import") as raised:
        import_peer("nemesis_fake_peer_broken", "fake-peer", ("1.0",), "adapter")
    assert "No module named 'nemesis_fake_dependency_absent'" in str(raised.value)
    assert "not installed" not in str(raised.value)
    _package(peer_folder, "nemesis_fake_peer_old", "from collections import a_name_that_does_not_exist\n")
    with pytest.raises(ImportError, match="installed but fails to import: ImportError: cannot import name"):
        import_peer("nemesis_fake_peer_old", "fake-peer", ("1.0",), "adapter")


def test_a_peer_of_a_series_not_reproduced_warns_and_imports(peer_folder):
    """The series compare as "major.minor": 1.190 is not of the 1.19 series."""
    _package(peer_folder, "nemesis_fake_peer_versioned", "__version__ = '1.17.1'\n")
    _package(peer_folder, "nemesis_fake_peer_later", "__version__ = '1.190.0'\n")
    for module, version in (("nemesis_fake_peer_versioned", "1.17.1"), ("nemesis_fake_peer_later", "1.190.0")):
        with pytest.warns(UserWarning, match=f"algorithms of fake-peer 1.18, 1.19; {version} is installed"):
            peer = import_peer(module, "fake-peer", ("1.18", "1.19"), "adapter")
        assert peer.__version__ == version
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        import_peer("nemesis_fake_peer_versioned", "fake-peer", ("1.16", "1.17"), "adapter")


def test_a_missing_peer_is_named_by_its_pip_package_not_its_module(peer_folder):
    with pytest.raises(ImportError, match=r"pip install 'fake-peer' \(or pip install 'nemesis_fast\[peers\]'\)$"):
        import_peer("nemesis_fake_peer_absent", "fake-peer", ("1.0",), "adapter")


def test_a_peer_whose_import_fails_on_a_part_of_itself_is_not_called_missing(peer_folder):
    """`from . import absent` raises an ImportError (not a ModuleNotFoundError) that bears the peer's own name."""
    _package(peer_folder, "nemesis_fake_peer_partial", "from . import absent_part\n")
    with pytest.raises(ImportError, match="'fake-peer', which is installed but fails to import: ImportError: cannot"):
        import_peer("nemesis_fake_peer_partial", "fake-peer", ("1.0",), "adapter")


def test_a_peer_without_a_version_warns_of_an_unknown_version(peer_folder):
    _package(peer_folder, "nemesis_fake_peer_unversioned", "")
    with pytest.warns(UserWarning, match="algorithms of fake-peer 1.18; an unknown version is installed"):
        import_peer("nemesis_fake_peer_unversioned", "fake-peer", ("1.18",), "adapter")
