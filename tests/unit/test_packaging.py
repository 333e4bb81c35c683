"""Release metadata that must agree with the one version source, ``turnstile.__version__``."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib
import yaml

import turnstile

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "turnstile-operator" / "Chart.yaml"


def test_pyproject_takes_the_version_from_the_package() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"]
    assert project["project"]["dynamic"] == ["version"]
    dynamic = project["tool"]["setuptools"]["dynamic"]["version"]
    assert dynamic == {"attr": "turnstile.__version__"}


def test_distribution_name_license_and_urls_are_declared() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "rasa-turnstile"
    assert project["license"] == "Apache-2.0"  # PEP 639: an SPDX expression
    assert project["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().lstrip().startswith("Apache License")
    assert {"Homepage", "Source", "Issues", "Changelog"} <= set(project["urls"])
    assert project["optional-dependencies"]["cli"] == ["PyYAML>=6"]


def test_chart_app_version_and_image_annotation_follow_the_package() -> None:
    chart = yaml.safe_load(CHART.read_text())
    assert chart["appVersion"] == turnstile.__version__
    images = yaml.safe_load(chart["annotations"]["artifacthub.io/images"])
    assert [i["image"].rpartition(":")[2] for i in images] == [turnstile.__version__]
    assert chart["sources"] and chart["maintainers"] and chart["home"]


def test_changelog_has_an_entry_for_the_version() -> None:
    releases = re.findall(r"^## \[(\d[^\]]*)\]", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert releases[0] == turnstile.__version__


def test_readme_wheel_line_names_the_version() -> None:
    readme = (ROOT / "README.md").read_text()
    assert f"dist/rasa_turnstile-{turnstile.__version__}-py3-none-any.whl" in readme


def test_the_isolated_build_uses_the_setuptools_the_main_venv_pins() -> None:
    def pin(name: str) -> str:
        lines = (ROOT / "requirements" / name).read_text().splitlines()
        [line] = [x for x in lines if x.startswith("setuptools==")]
        return line

    assert pin("build.txt") == pin("ci.txt")
