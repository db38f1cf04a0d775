"""The house's import picture: no arrow from a lower package into a higher one.

Layers, lowest first (docs/architecture.md):

1. ``upbit_fanout.subscriptions``: the contract and the small helpers both sides share;
2. ``upbit_fanout.collector``, ``upbit_fanout.client``, ``upbit_fanout.emulator``: three
   neighbours that never import each other (the emulator is Upbit: it knows nothing of ours);
3. the namespace root ``upbit_fanout`` (``cli``, ``commands``, ``settings``, ``logs``): the edge,
   which may import everything.

Every import statement in every module counts, function-level ones included, read with ``ast``
(nothing is imported). The test also pins which third-party libraries each layer may use, so
that, for example, websockets never leaks into the contract.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FOLDERS = {
    "subscriptions": ROOT / "subscriptions",
    "collector": ROOT / "collector",
    "client": ROOT / "client",
    "emulator": ROOT / "emulator",
}

ALLOWED_OURS = {
    "subscriptions": {"subscriptions"},
    "collector": {"collector", "subscriptions"},
    "client": {"client", "subscriptions"},
    "emulator": {"emulator", "subscriptions"},
}

ALLOWED_THIRD_PARTY = {
    "subscriptions": {"msgpack", "msgspec", "orjson", "redis"},
    "collector": {
        "msgpack",
        "msgspec",
        "orjson",
        "redis",
        "websockets",
        "picows",  # optional (extra fast): collector/transport_picows.py only
        "hiredis",  # redis[hiredis]: the publish link's reply parser (collector/publink.py)
        "jwt",
        "httpx",
        "prometheus_client",
    },
    "client": {"msgpack", "orjson", "redis", "hiredis"},
    "emulator": {"msgpack", "orjson", "websockets", "jwt", "trustme"},
}


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "upbit_fanout":
                # `from upbit_fanout import x`: x is a subpackage or a name of the root
                found.extend((node.lineno, f"upbit_fanout.{alias.name}") for alias in node.names)
            else:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            found.append((node.lineno, "." * node.level + (node.module or "")))
    return found


def _layer_of(module: str) -> str | None:
    """Which of our packages ``module`` belongs to; ``root`` for the namespace's own modules."""
    parts = module.split(".")
    if parts[0] != "upbit_fanout":
        return None
    if len(parts) == 1:
        return "root"
    return parts[1] if parts[1] in FOLDERS else "root"


def _violations(package: str) -> list[str]:
    bad: list[str] = []
    stdlib = sys.stdlib_module_names
    for path in sorted(FOLDERS[package].rglob("*.py")):
        where = path.relative_to(ROOT)
        for line, module in _imports(path):
            if module.startswith("."):
                bad.append(f"{where}:{line}: relative import {module!r} (spell it out)")
                continue
            layer = _layer_of(module)
            top = module.split(".")[0]
            if layer is not None:
                if layer not in ALLOWED_OURS[package]:
                    bad.append(f"{where}:{line}: {package} imports {module} ({layer})")
            elif (
                top not in stdlib
                and top != "__future__"
                and top not in (ALLOWED_THIRD_PARTY[package])
            ):
                bad.append(f"{where}:{line}: {package} imports third-party {top!r}")
    return bad


@pytest.mark.parametrize("package", sorted(FOLDERS))
def test_no_import_points_upwards_or_sideways(package: str) -> None:
    assert _violations(package) == []


def test_the_checker_sees_an_upward_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "subscriptions"
    folder.mkdir()
    (folder / "x.py").write_text(
        "def f():\n    from upbit_fanout.collector import Collector\n    import websockets\n",
        encoding="utf-8",
    )
    monkeypatch.setitem(FOLDERS, "subscriptions", folder)
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    found = _violations("subscriptions")
    assert any("imports upbit_fanout.collector (collector)" in item for item in found)
    assert any("third-party 'websockets'" in item for item in found)


@pytest.mark.parametrize("package", ["collector", "client", "emulator"])
def test_each_package_logs_through_its_one_logger(package: str) -> None:
    """docs/logging.md: ``upbit_fanout.collector``, ``.client`` and ``.emulator`` are the names
    a program configures; only ``_log.py`` makes one, other ``getLogger`` calls name a
    third-party library's logger (wrapped to hide credentials)."""
    own = f"upbit_fanout.{package}"
    offenders, made = [], []
    for path in sorted(FOLDERS[package].glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "getLogger"
            ):
                continue
            name = (
                node.args[0].value if node.args and isinstance(node.args[0], ast.Constant) else None
            )
            if path.name == "_log.py" and name == own:
                made.append(path.name)
            elif not isinstance(name, str) or name.startswith("upbit_fanout"):
                offenders.append(f"{path.name}: {ast.unparse(node)}")
    assert offenders == []
    assert made == ["_log.py"]
