"""The documentation site: it builds with --strict, and every public name has an API entry.

`make test` builds the site into site/ (`make docs`) before pytest runs; this test reads
that build when it is newer than every source it is made from, and otherwise builds the
site itself into a temporary folder, so that it also runs alone. The public names are
`keras_cam.__all__` and those of each module and subpackage of `keras_cam`: its `__all__`,
or the functions and classes its own file defines. Each must be an anchor of the API
reference pages, under its public path or where it is defined.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import keras_cam

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow  # backend-neutral: once, in the TensorFlow pass


def sources() -> list[Path]:
    found = [ROOT / "mkdocs.yml", ROOT / "README.md", ROOT / "CHANGELOG.md"]
    return found + sorted((ROOT / "docs").rglob("*")) + sorted((ROOT / "keras_cam").rglob("*.py"))


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    built = ROOT / "site" / "index.html"
    newest = max(
        p.stat().st_mtime for p in sources() if p.is_file() and "__pycache__" not in p.parts
    )
    if built.exists() and built.stat().st_mtime >= newest:
        return built.parent
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_MKDOCS_2_WARNING": "1"}
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]
    return out


def own_public_names(module) -> dict[str, object]:
    """`__all__`, or the public functions and classes the module's own file defines."""
    if hasattr(module, "__all__"):
        return {name: getattr(module, name) for name in module.__all__}
    return {
        name: value
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (inspect.isfunction(value) or inspect.isclass(value))
        and value.__module__ == module.__name__
    }


def public_names() -> dict[str, object]:
    """Public path -> object, for every public name of keras_cam and its subpackages."""
    found = {f"keras_cam.{name}": getattr(keras_cam, name) for name in keras_cam.__all__}
    del found["keras_cam.__version__"]  # a string, named on the reference's first page
    for path, value in list(found.items()):
        if inspect.ismodule(value):  # keras_cam.methods, keras_cam.metrics
            del found[path]
            found.update({f"{path}.{n}": v for n, v in own_public_names(value).items()})
    for info in pkgutil.iter_modules(keras_cam.__path__, "keras_cam."):
        module = importlib.import_module(info.name)
        found.update({f"{info.name}.{n}": v for n, v in own_public_names(module).items()})
    return found


def anchors(site: Path) -> set[str]:
    ids: set[str] = set()
    for page in (site / "reference").rglob("*.html"):
        ids |= set(re.findall(r'id="(keras_cam[\w.]*)"', page.read_text(encoding="utf-8")))
    return ids


def test_every_public_name_has_an_api_entry(site):
    ids = anchors(site)
    missing = []
    for path, value in public_names().items():
        defined = getattr(value, "__module__", None), getattr(value, "__qualname__", None)
        if path not in ids and ".".join(filter(None, defined)) not in ids:
            missing.append(path)
    assert not missing, f"no entry in docs/reference/ for {missing}"
    assert len(public_names()) >= 60


def test_the_methods_page_lists_every_registered_method(site):
    page = (site / "methods" / "index.html").read_text(encoding="utf-8")
    for name, description in keras_cam.available_methods().items():
        assert f"&quot;{name}&quot;" in page or f'"{name}"' in page, name
        assert description.split(":")[0].split("(")[0].strip() in page, name


def test_readme_is_a_front_page():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    assert "`make demo`" in readme
    assert "`make test`" in readme
    for link in re.findall(r"\]\(((?:docs/|CHANGELOG)[^)#]*)", readme):
        assert (ROOT / link).exists(), link
