"""docs/architecture.md stays true to the code: every topic, setting and metric it names exists, every
section it links to is there, and the README points to it."""

from __future__ import annotations

import os
import re
from pathlib import Path

from prometheus_client import REGISTRY
from pydantic_settings import BaseSettings

import hookfleet.metrics  # noqa: F401 - registers every metric
from hookfleet import settings
from schemas.topics import Topics

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "architecture.md").read_text()


def _anchor(heading: str) -> str:
    return re.sub(r"[^a-z0-9 -]", "", heading.lower()).strip().replace(" ", "-")


def test_every_topic_named_exists() -> None:
    named = set(re.findall(r"`(webhooks\.[a-z0-9.]*[a-z0-9])`", DOC))
    assert named, "the document names no topic"
    assert named <= set(Topics().all()), named - set(Topics().all())
    assert set(Topics().all()) <= named, "a topic is missing from the document"


def _settings_env_names() -> dict[str, set[str]]:
    """Every setting of every role, by its HOOKFLEET_ name, with every environment name that sets it."""
    names: dict[str, set[str]] = {}
    for value in vars(settings).values():
        if isinstance(value, type) and issubclass(value, BaseSettings):
            for name, field in value.model_fields.items():
                env = f"HOOKFLEET_{name.upper()}"
                aliases = getattr(field.validation_alias, "choices", None) or []
                names.setdefault(env, {env}).update(a for a in aliases if isinstance(a, str))
    return names


def test_every_setting_named_exists() -> None:
    fields = set(_settings_env_names())
    named = set(re.findall(r"\b(HOOKFLEET_[A-Z0-9_]+)\b", DOC))
    assert len(named) > 20
    assert named <= fields, sorted(named - fields)


def test_every_setting_is_documented() -> None:
    missing = sorted(env for env, names in _settings_env_names().items() if not any(n in DOC for n in names))
    assert not missing, f"settings missing from docs/architecture.md#settings: {missing}"


def test_every_metric_named_exists() -> None:
    registered: set[str] = set()
    for family in REGISTRY.collect():
        registered |= {family.name, *(s.name for s in family.samples)}
        if family.type == "counter":
            registered.add(family.name + "_total")
    named = set(re.findall(r"\b(hookfleet_[a-z_]+[a-z])\b", DOC))
    assert named, "the document names no metric"
    assert named <= registered, sorted(named - registered)


def test_every_section_linked_exists_and_the_readme_links_the_document() -> None:
    anchors = {_anchor(h) for h in re.findall(r"^#+ (.+)$", DOC, flags=re.M)}
    linked = set(re.findall(r"\]\(#([a-z0-9-]+)\)", DOC))
    assert linked <= anchors, sorted(linked - anchors)
    assert "docs/architecture.md" in (ROOT / "README.md").read_text()


def _project_text(folder: Path) -> list[Path]:
    """The project's own text files under `folder`. Hidden directories are pruned before they are entered: the local
    stack keeps Kafka's data under deploy/local/.cache, where the broker renames and deletes directories while the
    tests run, so a walk into it can fail on a directory that vanished mid-walk."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "__pycache__"]
        found += [Path(dirpath) / f for f in filenames if Path(f).suffix in {".py", ".sql", ".yml", ".yaml", ".md"}]
    return found


def test_every_reference_to_a_section_from_the_code_exists() -> None:
    anchors = {_anchor(h) for h in re.findall(r"^#+ (.+)$", DOC, flags=re.M)}
    cited: dict[str, str] = {}
    for folder in ("hookfleet", "schemas", "producer", "dispatcher", "retry_scheduler", "recorder", "api", "deploy"):
        for path in _project_text(ROOT / folder):
            try:
                text = path.read_text(errors="replace")
            except OSError:  # pragma: no cover - a file removed between listing and reading
                continue
            for anchor in re.findall(r"architecture\.md#([a-z0-9-]+)", text):
                cited[anchor] = str(path.relative_to(ROOT))
    assert cited, "no code cites the document"
    missing = {a: where for a, where in cited.items() if a not in anchors}
    assert not missing, missing
