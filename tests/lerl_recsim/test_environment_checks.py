"""`import lerl_recsim` names the fix when the installed set cannot work."""

from importlib import metadata

import pytest

from tests.conftest import REPO_ROOT
import lerl_recsim

GOOD = {"tensorflow": "2.21.0", "tf-agents": "0.19.0",
        "typing-extensions": "4.16.0", "wrapt": "2.5.2"}


def installed(monkeypatch, **changes):
  versions = dict(GOOD, **{k.replace("_", "-"): v for k, v in changes.items()})

  def version(name):
    if versions.get(name) is None:
      raise metadata.PackageNotFoundError(name)
    return versions[name]

  monkeypatch.setattr(lerl_recsim._metadata, "version", version)


def test_the_working_set_passes(monkeypatch):
  installed(monkeypatch)
  lerl_recsim.check_environment()


@pytest.mark.parametrize("changes,expected", [
    (dict(tf_agents=None), "tf-agents is not installed; install it without "
                           "its pins: pip install --no-deps tf-agents==0.19.0"),
    (dict(typing_extensions="4.5.0"), "typing-extensions 4.5.0 is installed, "
                                      ">= 4.14 is needed"),
    (dict(wrapt="1.17.2"), "wrapt 1.17.2 is installed, >= 2.2 is needed"),
    (dict(tensorflow="2.16.1"), "tensorflow 2.16.1 is installed, >= 2.21, "
                                "< 2.22 is needed"),
    (dict(tensorflow="2.22.0rc1"), "tensorflow 2.22.0rc1 is installed"),
])
def test_a_wrong_set_names_the_package_and_the_fix(monkeypatch, changes,
                                                   expected):
  installed(monkeypatch, **changes)
  with pytest.raises(ImportError, match="cannot run in this environment") as e:
    lerl_recsim.check_environment()
  assert expected in str(e.value)


def test_every_problem_is_named_at_once(monkeypatch):
  installed(monkeypatch, wrapt="2.1.0", typing_extensions="4.12.2")
  with pytest.raises(ImportError) as e:
    lerl_recsim.check_environment()
  assert "wrapt 2.1.0" in str(e.value) and "typing-extensions 4.12.2" in str(e.value)


def test_uv_overrides_agree_with_the_lock_and_the_import_check():
  root = REPO_ROOT / "requirements"
  lock = dict(line.split("==") for line in (root / "lock.txt").read_text(
      ).splitlines() if "==" in line and not line.startswith("#"))
  lock = {name.lower().replace("_", "-"): v for name, v in lock.items()}
  overrides = [line for line in (root / "overrides.txt").read_text(
      ).splitlines() if line and not line.startswith("#")]
  assert "tensorflow-probability==" + lock["tensorflow-probability"] in overrides
  assert "typing-extensions>=4.14" in overrides
  assert lerl_recsim._version_tuple(lock["typing-extensions"]) >= (4, 14)
  assert not any(name.startswith("pygame") for name in lock)
