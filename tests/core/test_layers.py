"""The package layering holds: a stage imports only from `core` and the stages before it, `model/`
never imports `pipeline`, and nothing imports `cli`. Checked on every import statement in the tree."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ORDER = ["core", "weights", "data", "prep", "store", "engine", "results", "experiments"]


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "pipeline" and parts[1] in ORDER else None


def test_stages_import_only_earlier_stages():
    problems = []
    for path in sorted((ROOT / "pipeline").rglob("*.py")):
        rel = path.relative_to(ROOT)
        own = rel.parts[1] if len(rel.parts) > 2 else None  # None: pipeline/__init__.py, pipeline/demo.py
        for line, module in _imports(path):
            if module == "cli" or module.startswith("cli."):
                problems.append(f"{rel}:{line} imports cli")
            target = _stage(module)
            if own is None or target is None:
                continue
            if ORDER.index(target) > ORDER.index(own):
                problems.append(f"{rel}:{line} ({own}) imports {module} ({target} comes later)")
    assert not problems, "\n".join(problems)


def test_model_depends_on_torch_and_timm_only():
    allowed_third_party = {"torch", "timm", "numpy"}
    problems = []
    for path in sorted((ROOT / "model").glob("*.py")):
        for line, module in _imports(path):
            top = module.split(".")[0]
            if top in ("pipeline", "cli"):
                problems.append(f"model/{path.name}:{line} imports {module}")
            elif top not in allowed_third_party and top != "model" and not _stdlib(top):
                problems.append(f"model/{path.name}:{line} imports third-party {module}")
    assert not problems, "\n".join(problems)


def _stdlib(name: str) -> bool:
    import sys

    return name in sys.stdlib_module_names or name == "__future__"
