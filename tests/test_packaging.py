"""Packaging: the licence ships, the metadata names it and the Python versions we support."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_license_file_ships_with_the_metadata():
    """The MIT licence text is in the repository and named by the package metadata."""
    metadata = importlib.metadata.metadata("tokenflight")
    assert metadata["License-Expression"] == "MIT"
    assert metadata.get_all("License-File") == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


def test_classifiers_name_the_supported_pythons_and_status():
    """Classifiers give the development status and each supported Python version."""
    classifiers = importlib.metadata.metadata("tokenflight").get_all("Classifier") or []
    assert any(c.startswith("Development Status ::") for c in classifiers)
    assert "Programming Language :: Python :: 3.11" in classifiers


def test_pytest_plugin_imports_nothing_heavy():
    """The pytest11 plugin, loaded in every pytest session, imports no tokenflight or HTTP."""
    import subprocess
    import sys

    code = (
        "import sys, pytest_tokenflight; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('tokenflight', 'httpx', 'httpx2', 'anyio', 'h11', 'tenacity')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_pytest_plugin_is_the_registered_entry_point():
    """The `tokenflight` pytest11 entry point names the light plugin module."""
    points = importlib.metadata.entry_points(group="pytest11")
    assert [p.value for p in points if p.name == "tokenflight"] == ["pytest_tokenflight"]


def test_project_urls_name_the_docs_source_and_changelog():
    """pyproject's [project.urls] give the documentation, the source and the changelog."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    urls = project["urls"]
    assert {"Documentation", "Source", "Changelog"} <= set(urls)
    assert urls["Source"] == "https://github.com/tokenflight/tokenflight"
    assert all(url.startswith(urls["Source"]) for url in urls.values())
    assert (ROOT / "CHANGELOG.md").is_file()
    assert project["optional-dependencies"]["cli"] == ["rich>=13"]
