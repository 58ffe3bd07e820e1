"""The shape of the code: two distributions of one version, the server in wings,
public names only across the client boundary, no import cycles, and a module map
in docs/architecture.md that matches the tree."""

from __future__ import annotations

import ast
import re
import tomllib
from collections import defaultdict
from pathlib import Path

import auth_client
import auth_service

REPO = Path(__file__).resolve().parent.parent
SERVER = REPO / "auth_service"
CLIENT = REPO / "clients" / "auth_client"
SKIP_DIRS = {".git", ".venv", "__pycache__", "node_modules", ".mypy_cache", ".ruff_cache"}


def python_files(root: Path) -> list[Path]:
    return sorted(
        p for p in root.rglob("*.py") if not SKIP_DIRS.intersection(p.relative_to(root).parts)
    )


def module_name(path: Path, base: Path) -> str:
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_block(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_names(path: Path, *, runtime_only: bool = False) -> list[str]:
    """Every dotted name an import statement in `path` names: `import a.b` -> a.b,
    `from a.b import c` -> a.b.c (a submodule or an attribute; callers resolve)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    names: list[str] = []

    def visit(node: ast.AST) -> None:
        if runtime_only and _type_checking_block(node):
            return
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names


def import_graph(base: Path, package: str) -> dict[str, set[str]]:
    """module -> modules of `package` it imports at run time (a `from pkg import x`
    edge goes to the submodule pkg.x when there is one, else to pkg)."""
    modules = {module_name(p, base): p for p in python_files(base / package)}
    modules = {m: p for m, p in modules.items() if ".client_tests" not in m}
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in modules.items():
        for name in imported_names(path, runtime_only=True):
            target = name
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != module:
                graph[module].add(target)
    return {m: graph.get(m, set()) for m in modules}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = dfs(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = dfs(node)
            if found:
                return found
    return None


def test_nothing_outside_clients_imports_a_private_auth_client_name() -> None:
    offenders = []
    for path in python_files(REPO):
        rel = path.relative_to(REPO)
        if rel.parts[0] == "clients":
            continue
        for name in imported_names(path):
            parts = name.split(".")
            if parts[0] == "auth_client" and any(part.startswith("_") for part in parts[1:]):
                offenders.append(f"{rel}: {name}")
    assert offenders == []


def test_the_server_and_the_client_have_no_import_cycle() -> None:
    assert find_cycle(import_graph(REPO, "auth_service")) is None
    assert find_cycle(import_graph(REPO / "clients", "auth_client")) is None


def test_the_client_never_imports_the_server() -> None:
    for path in python_files(CLIENT):
        for name in imported_names(path):
            assert name.split(".")[0] != "auth_service", f"{path}: {name}"


def test_wings_depend_one_way() -> None:
    """cli -> local -> api -> events -> store -> config; the shared modules at the top
    (errors, addresses, signals, notices, lifecycle, tracing) import no wing."""
    order = ["config", "store", "events", "api", "local", "cli"]
    graph = import_graph(REPO, "auth_service")
    for module, targets in graph.items():
        parts = module.split(".")
        wing = parts[1] if len(parts) > 1 and parts[1] in order else None
        for target in targets:
            tparts = target.split(".")
            twing = tparts[1] if len(tparts) > 1 and tparts[1] in order else None
            if twing is None or twing == wing:
                continue
            if module == "auth_service.__main__":
                continue  # `python -m auth_service` is the command
            assert wing is not None, f"{module} (shared) imports the wing {target}"
            assert order.index(twing) < order.index(wing), f"{module} imports {target}"


def test_at_most_eight_modules_at_the_top_and_every_wing_says_what_it_owns() -> None:
    top = sorted(p.name for p in SERVER.glob("*.py"))
    assert len(top) <= 8, top
    wings = sorted(p for p in SERVER.iterdir() if (p / "__init__.py").is_file())
    assert [w.name for w in wings] == ["api", "cli", "config", "events", "local", "store"]
    for wing in [*wings, CLIENT / "toolkit"]:
        doc = ast.get_docstring(ast.parse((wing / "__init__.py").read_text()))
        assert doc, f"{wing.name}/__init__.py has no docstring"
        if wing.parent == SERVER:
            assert "import" in doc, f"{wing.name}: say what it may import"


def test_the_module_map_in_the_architecture_doc_matches_the_tree() -> None:
    text = (REPO / "docs" / "architecture.md").read_text()
    section = text.split("## Where the code is", 1)[1]
    listed = set(re.findall(r"`((?:auth_service|clients/auth_client)/[\w/]+\.py)`", section))
    on_disk = {
        str(p.relative_to(REPO))
        for root in (SERVER, CLIENT)
        for p in python_files(root)
        if "_proto" not in p.parts
    }
    assert sorted(on_disk - listed) == [], "modules missing from docs/architecture.md"
    assert sorted(listed - on_disk) == [], "docs/architecture.md names modules that do not exist"


def test_one_version_and_the_server_pins_the_client_to_it() -> None:
    server = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    client = tomllib.loads((REPO / "clients" / "pyproject.toml").read_text())["project"]
    assert client["name"] == "auth-client"
    assert server["version"] == client["version"] == auth_service.__version__
    assert auth_client.__version__ == client["version"]
    pins = [d for d in server["dependencies"] if d.startswith("auth-client")]
    assert len(pins) == 1
    assert pins[0].endswith(f"=={client['version']}")
    assert f"## {client['version']}" in (REPO / "CHANGELOG.md").read_text()


def test_the_client_needs_only_what_a_lookup_needs() -> None:
    client = tomllib.loads((REPO / "clients" / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0] for d in client["dependencies"]}
    assert names == {"grpcio", "protobuf", "pybreaker"}
    assert set(client["optional-dependencies"]) == {
        "events",
        "toolkit",
        "prometheus",
        "tracing",
        "sqlalchemy",
        "django",
    }
