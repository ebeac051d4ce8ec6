"""The import contract of docs/architecture.md ("Packages and layers"): layers, no cycles.

Every import counts, at any depth of a module (a function-level import is as much
a dependency as one at the top, so a lazy import cannot hide a cycle or a call up),
and ``if TYPE_CHECKING`` imports too. Parsed with ``ast``: nothing is imported.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("provisioning", "scim", "jobs")

# Top to bottom. A module may import modules of its own layer and of the layers below,
# never above. A module belongs to the layer of the longest name below that is it or
# contains it; every package's ``models`` module (its tables) is in "schema".
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "edges",
        (
            "provisioning",  # the package itself: create_app, loaded lazily
            "provisioning.api",
            "provisioning.cli",
            "provisioning.console",
            "provisioning.demo",
            "provisioning.doctor",
            "provisioning.hooks",
            "provisioning.integrations",  # the MCP gateway and tool listing (mcp, fastmcp)
            "provisioning.migrations",
            "provisioning.web",
            "scim",
            "scim.answers",  # the SCIM edge's modules, each one concern of the edge
            "scim.quirks",
            "scim.server",
            "scim.service",
            "jobs",
        ),
    ),
    (
        "flows",
        (
            "provisioning.connectors.catalogue",
            "provisioning.connectors.tools",
            "provisioning.offboarding",
            "provisioning.okta",
            "provisioning.oversight",
        ),
    ),
    ("lifecycle", ("provisioning.people",)),
    (
        "consequences",
        ("provisioning.offboarding.records", "provisioning.requests", "provisioning.reviews"),
    ),
    ("entitlements", ("provisioning.entitlements",)),
    ("delivery", ("provisioning.delivery",)),
    (
        "facts",
        (
            "provisioning.connectors",
            "provisioning.identity",
            "provisioning.oversight.findings",
            "provisioning.schedule",
            "provisioning.tokens",
        ),
    ),
    ("settings", ("provisioning.settings",)),
    ("audit", ("provisioning.audit",)),
    ("schema", ("provisioning.tables",)),
    (
        "infrastructure",
        (
            "provisioning.correlation",
            "provisioning.database",
            "provisioning.hotpath",
            "provisioning.liveness",
            "provisioning.logs",
            "provisioning.metrics",
            "provisioning.text",
            "provisioning.types",
        ),
    ),
]
MODELS = re.compile(r"^provisioning\.[a-z_]+\.models$")
EDGES_ONLY = ("flask", "flask_openapi3", "scim2_flask", "werkzeug")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = modules()


def imports(name: str, path: Path) -> set[tuple[str, int]]:
    """(imported name, line) for every import in the module, resolved to a full name."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {(alias.name, node.lineno) for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add((full if full in MODULES else base, node.lineno))
    return found


def own(imported: str) -> str | None:
    """The project's module an imported name loads (None: not ours)."""
    while imported and imported not in MODULES:
        imported = imported.rpartition(".")[0]
    return imported or None


def graph() -> dict[str, dict[str, int]]:
    edges: dict[str, dict[str, int]] = {}
    for name, path in MODULES.items():
        edges[name] = {}
        for imported, line in imports(name, path):
            target = own(imported)
            if target is not None and target != name:
                edges[name].setdefault(target, line)
    return edges


def layer(module: str) -> int | None:
    if MODELS.match(module):
        return next(i for i, (title, _) in enumerate(LAYERS) if title == "schema")
    best: tuple[int, int] | None = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            inside = module == prefix or module.startswith(prefix + ".")
            if inside and (best is None or len(prefix) > best[0]):
                best = (len(prefix), index)
    return None if best is None else best[1]


def upward(edges: dict[str, dict[str, int]]) -> list[str]:
    """Every import of a module from a layer above its own."""
    return sorted(
        f"{module}:{line} imports {target} ({LAYERS[layer(target)][0]} is above "
        f"{LAYERS[layer(module)][0]})"
        for module, targets in edges.items()
        for target, line in targets.items()
        if layer(target) < layer(module)
    )


def cycles(edges: dict[str, dict[str, int]]) -> list[str]:
    """A cycle through each import that closes one (depth first)."""
    found = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(edges.get(module, {})):
            if state.get(target) == 1:
                found.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module)
    return found


def test_every_module_has_a_layer():
    assert sorted(m for m in MODULES if layer(m) is None) == []


def test_no_module_imports_a_layer_above_its_own():
    assert upward(graph()) == []


def test_there_is_no_import_cycle():
    assert cycles(graph()) == []


def test_no_module_outside_the_edges_imports_flask():
    edges = 0
    inside = [
        f"{name}:{line} imports {imported}"
        for name, path in MODULES.items()
        if layer(name) != edges
        for imported, line in imports(name, path)
        if imported.split(".")[0] in EDGES_ONLY
    ]
    assert sorted(inside) == []


def test_the_architecture_record_names_every_layer_and_package():
    record = (ROOT / "docs" / "architecture.md").read_text()
    section = record.split("## Packages and layers", 1)[1].split("\n## ", 1)[0]
    missing = [
        prefix
        for _, prefixes in LAYERS
        for prefix in prefixes
        if f"`{prefix}`" not in section and prefix != "provisioning"
    ] + [title for title, _ in LAYERS if f"**{title}**" not in section]
    assert missing == []


def test_the_checks_see_a_lazy_call_up_and_a_cycle(tmp_path):
    """What the contract forbids is seen: a function-level import of a higher layer, and a
    cycle (here the one ``brake`` and ``engine`` once made)."""
    lazy = tmp_path / "directory.py"
    lazy.write_text("def later():\n    from provisioning.people import lifecycle\n")
    found = {imported: line for imported, line in imports("provisioning.identity.directory", lazy)}
    assert found == {"provisioning.people.lifecycle": 2}
    assert upward({"provisioning.identity.directory": found}) == [
        "provisioning.identity.directory:2 imports provisioning.people.lifecycle "
        "(lifecycle is above facts)"
    ]
    brake, engine = "provisioning.entitlements.brake", "provisioning.entitlements.engine"
    assert cycles({brake: {engine: 1}, engine: {brake: 1}}) == [f"{brake} -> {engine} -> {brake}"]


def test_every_invariant_cited_is_one_of_the_record():
    """Code, tests and documents cite the invariants of docs/architecture.md, by number,
    and no document outside the repository."""
    record = (ROOT / "docs" / "architecture.md").read_text()
    section = record.split("## Invariants", 1)[1].split("\n## ", 1)[0]
    numbered = {int(n) for n in re.findall(r"^(\d+)\. \*\*", section, re.MULTILINE)}
    assert numbered == set(range(1, len(numbered) + 1)) and numbered
    files = [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
    for top in (*PACKAGES, "tests", "bench"):
        files += (ROOT / top).rglob("*.py")
    cited, outside = set(), []
    for path in files:
        text = path.read_text()
        for words in re.findall(r"[Ii]nvariants? (\d+(?:(?:, | and )\d+)*)", text):
            cited |= {int(n) for n in re.findall(r"\d+", words)}
        if re.search(r"DESIGN(\.md)?'?s? invariant", text):
            outside.append(str(path.relative_to(ROOT)))
    assert outside == [] and cited - numbered == set()
