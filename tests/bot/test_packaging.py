"""The Dockerfile, Makefile, CI script and README agree on how Lexicon is installed."""

from __future__ import annotations

import re

from tests.conftest import REPO_ROOT


def _readme_install_block() -> list[str]:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("### Install by hand", 1)[1]
    block = section.split("```", 2)[1]
    return [line.strip() for line in block.splitlines() if line.strip().startswith("python -m pip")]


def test_dockerfile_installs_like_the_readme() -> None:
    """Every pip step of README's manual install appears, in order, in the Dockerfile."""
    steps = _readme_install_block()
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    runs = [m.group(1).strip() for m in re.finditer(r"^RUN (python -m pip .*)$", dockerfile, re.M)]
    assert steps, "README has no pip steps under 'Install by hand'"
    assert runs == steps


def test_dockerfile_shape() -> None:
    """Non-root user, /data volume, the bot as entrypoint, and a healthcheck."""
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM nvidia/cuda:\S+runtime", dockerfile, re.M)
    assert re.search(r"^USER lexicon$", dockerfile, re.M)
    assert 'VOLUME ["/data"]' in dockerfile
    assert 'ENTRYPOINT ["lexicon"]' in dockerfile and 'CMD ["run"]' in dockerfile
    assert "HEALTHCHECK" in dockerfile and "bot.health" in dockerfile


def test_makefile_installs_torch_with_the_readme_spec() -> None:
    """make's torch spec is the one the README documents, so both machines get the same."""
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "TORCH  ?= torch==2.13.0" in makefile
    assert "python -m pip install torch==2.13.0" in _readme_install_block()


def test_ci_runs_the_readme_test_command() -> None:
    """.ci/run calls `make test`, the command README gives for the tests."""
    assert "make test" in (REPO_ROOT / ".ci/run").read_text()
    assert "make test" in (REPO_ROOT / "README.md").read_text()
