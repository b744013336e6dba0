"""The package's layers, read from its source with `ast`: who may import whom.

Every import counts, also one inside a function (a lazy import) or under
`TYPE_CHECKING`: a layer that needs another only for a type still depends on it.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest
from conftest import ROOT

PACKAGE = ROOT / "keras_cam"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path) -> list[tuple[str, str]]:
    """(imported module, imported name or "") of every import in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: a relative import; write keras_cam.… in full"
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                if submodule in MODULES:
                    found.append((submodule, ""))
                else:
                    found.append((node.module, alias.name))
    return found


GRAPH = {
    name: {module for module, _ in _imports(path) if module.split(".")[0] == "keras_cam"}
    for name, path in MODULES.items()
}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else ""


LAYERS = ("compute", "methods", "core", "targets", "diagnostics", "render", "sinks")
LAYERS += ("training", "cli")


def test_every_module_of_the_package_is_found():
    assert {"keras_cam.core.explainer", "keras_cam.render.overlay", "keras_cam"} <= set(MODULES)
    assert "keras_cam.core.explainer" in GRAPH["keras_cam.diagnostics.sanity"]


def test_no_module_imports_a_private_name_of_another():
    private = [
        f"{name} imports {module}.{imported}"
        for name, path in MODULES.items()
        for module, imported in _imports(path)
        if module.startswith("keras_cam")
        and module != name
        and imported.startswith("_")
        and not imported.startswith("__")
    ]
    assert private == []


def test_no_import_cycle():
    """Depth-first search over the module graph; a back edge is a cycle."""
    state: dict[str, int] = defaultdict(int)  # 0 unseen, 1 on the path, 2 done
    path: list[str] = []
    cycles = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(GRAPH.get(module, ())):
            if state[target] == 1:
                cycles.append(" -> ".join([*path[path.index(target) :], target]))
            elif state[target] == 0:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(GRAPH):
        if state[module] == 0:
            visit(module)
    assert cycles == []


def _crossings(layer: str, allowed: set[str]) -> list[str]:
    return sorted(
        f"{name} -> {target}"
        for name, targets in GRAPH.items()
        if _layer(name) == layer
        for target in targets
        if _layer(target) not in allowed and target.removeprefix("keras_cam.") not in allowed
    )


@pytest.mark.parametrize(
    ("layer", "allowed"),
    [
        ("render", {"render"}),  # numpy in, pictures out: no model, no sinks
        ("core", {"core", "methods", "compute", "targets"}),
        ("methods", {"methods", "compute", "core"}),
        # core.interrupts is a standard-library-only leaf: the compiled loops' Ctrl-C hooks.
        ("compute", {"compute", "core.interrupts"}),
        ("targets", {"targets", "core"}),
    ],
)
def test_each_layer_imports_only_the_layers_below_it(layer, allowed):
    assert _crossings(layer, allowed) == []


def test_rendering_imports_no_keras():
    keras_imports = [
        f"{name} imports {module}"
        for name, path in MODULES.items()
        if _layer(name) == "render"
        for module, _ in _imports(path)
        if module.split(".")[0] in ("keras", "tensorflow", "jax", "torch")
    ]
    assert keras_imports == []


def test_the_callback_stays_a_stage_a_user_can_read():
    """At most 350 lines in its module and 12 constructor parameters (Keras' TensorBoard has 9)."""
    source = (PACKAGE / "training" / "callback.py").read_text()
    assert len(source.splitlines()) <= 350
    (init,) = [
        node
        for cls in ast.parse(source).body
        if isinstance(cls, ast.ClassDef) and cls.name == "CAMCallback"
        for node in cls.body
        if isinstance(node, ast.FunctionDef) and node.name == "__init__"
    ]
    arguments = init.args
    names = [a.arg for a in (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs)]
    assert names[0] == "self"
    assert len(names) - 1 <= 12, names
    assert arguments.vararg is None
    assert arguments.kwarg is None
