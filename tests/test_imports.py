"""Every module of the installed packages imports, on what `dependencies` installs alone.

The README's run command installs no extras: a module that imports a package
only an extra brings in works in the test virtualenv and fails in production.
The second test catches that here; `.ci/smoke` checks it for real in a fresh
virtualenv with no extras.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import metadata

import pytest

PACKAGES = ("provisioning", "scim", "jobs")
# Alembic's environment script runs only inside Alembic (it reads alembic.context.config).
SCRIPTS = ("provisioning.migrations.env",)

# Run in a fresh interpreter, so that only what the packages import is counted.
WALK = """
import importlib, json, pkgutil, sys
before = set(sys.modules)
failed = {}
for name in PACKAGES:
    package = importlib.import_module(name)
    for info in pkgutil.walk_packages(package.__path__, name + "."):
        if info.name in SCRIPTS:
            continue
        try:
            importlib.import_module(info.name)
        except Exception as exc:
            failed[info.name] = f"{type(exc).__name__}: {exc}"
print(json.dumps({"failed": failed, "loaded": sorted(set(sys.modules) - before)}))
"""


@pytest.fixture(scope="module")
def walked() -> dict:
    script = f"PACKAGES = {PACKAGES!r}\nSCRIPTS = {SCRIPTS!r}\n{WALK}"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(done.stdout.splitlines()[-1])


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;(]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _runtime_distributions() -> set[str]:
    """The project's `dependencies`, closed over their own requirements (no extras of ours)."""
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [("connector-provisioning", frozenset())]
    while todo:
        dist, extras = todo.pop()
        if (dist, extras) in seen:
            continue
        seen.add((dist, extras))
        try:
            requirements = metadata.requires(dist) or []
        except metadata.PackageNotFoundError:
            continue
        for requirement in requirements:
            marker = requirement.split(";", 1)[1] if ";" in requirement else ""
            wanted = set(re.findall(r"""extra\s*==\s*['"]([^'"]+)['"]""", marker))
            if wanted and not wanted & extras:
                continue
            found = re.search(r"\[([^\]]+)\]", requirement.split(";", 1)[0])
            own = frozenset(e.strip() for e in found.group(1).split(",")) if found else frozenset()
            todo.append((_name(requirement), own))
    return {dist for dist, _ in seen}


def test_every_module_of_the_installed_packages_imports(walked):
    assert walked["failed"] == {}


def test_every_third_party_package_they_import_is_a_runtime_dependency(walked):
    loaded = {module.split(".")[0] for module in walked["loaded"]}
    owners = metadata.packages_distributions()
    runtime = _runtime_distributions()
    outside = {
        top: sorted(owners[top])
        for top in loaded - set(sys.stdlib_module_names) - set(PACKAGES)
        if top in owners and not {d.lower().replace("_", "-") for d in owners[top]} & runtime
    }
    assert outside == {}, f"imported, but only an extra installs them: {outside}"
