"""Every command README.md, docs/, examples/README.md and bench/RESULTS.md show runs
as written after the Quick start: the project's tools are called by their path in
the Quick start's virtualenv (`.venv/bin/auth-service`, never a bare `auth-service`
that is not on PATH, nor a tool the Quick start does not install, like grpcurl).
Commands for a deployment (docker, kubectl, pg_dump against production) are left
alone. The dev banner's commands are run for real in tests/test_dev.py."""

from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCS = [
    REPO / "README.md",
    REPO / "examples" / "README.md",
    REPO / "bench" / "RESULTS.md",
    *sorted((REPO / "docs").glob("*.md")),
]
# Installed by the Quick start into .venv/bin, so never bare; grpcurl is not
# installable here at all. (kcat appears only in the operations guide, against a
# deployment's Kafka, like kafka-topics.sh; tests/events/test_kafka_cluster_faults.py
# runs it against Apache Kafka.)
BARE = {"auth-service", "auth-toolkit", "pip", "pip3", "python", "buf", "pytest", "dbmate"}
NOT_INSTALLED = {"grpcurl"}
VENV_BIN = Path(sys.executable).parent


def shell_commands(text: str) -> list[str]:
    """Each command of the ```sh blocks, continuation lines joined."""
    out: list[str] = []
    for block in re.findall(r"```(?:sh|bash|shell)\n(.*?)```", text, re.DOTALL):
        joined = re.sub(r"\\\n\s*", " ", block)
        for raw in joined.splitlines():
            line = raw.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                out.extend(part.strip() for part in re.split(r"&&|\|", line) if part.strip())
    return out


def program(command: str) -> str:
    """The program a command runs (leading VAR=value assignments skipped)."""
    words = [w for w in command.split() if not re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", w)]
    if words and words[0] == "export":
        return "export"
    return words[0] if words else ""


def test_project_tools_are_called_as_the_quick_start_installs_them() -> None:
    problems = []
    for doc in DOCS:
        for command in shell_commands(doc.read_text()):
            name = program(command)
            where = f"{doc.relative_to(REPO)}: {command}"
            if name in BARE:
                problems.append(f"{where}  (use .venv/bin/{name})")
            elif name in NOT_INSTALLED:
                problems.append(f"{where}  ({name} is not installed by the Quick start)")
            elif name.startswith(".venv/bin/"):
                tool = name.removeprefix(".venv/bin/")
                if not (VENV_BIN / tool).exists():
                    problems.append(f"{where}  (.venv/bin/{tool} is not installed)")
    assert problems == []


def test_the_docs_index_lists_every_document_and_the_readme_links_it() -> None:
    """#29: docs/ had seven files and no index. docs/README.md has one row per
    document (who it is for, what it answers); a new document needs its row."""
    index = (REPO / "docs" / "README.md").read_text()
    row = r"^\| \[([\w.-]+\.md)\]\(\1\) \| ([^|]+) \| ([^|]+) \|$"
    rows = {name: (who, what) for name, who, what in re.findall(row, index, re.MULTILINE)}
    documents = {p.name for p in (REPO / "docs").glob("*.md")} - {"README.md"}
    assert set(rows) == documents
    assert all(who.strip() and what.strip() for who, what in rows.values())
    for target in re.findall(r"\]\(([^)#]+)", index):
        assert (REPO / "docs" / target).resolve().exists(), target
    assert "(docs/README.md)" in (REPO / "README.md").read_text()
