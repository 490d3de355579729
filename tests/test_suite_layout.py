"""The test suite's own layout: no test module imports another test module (or conftest.py):
what tests share is in the seglight_testing package. Test files' basenames are unique, as
pytest's default import mode (`prepend`, test folders without __init__.py) needs: each test
module is imported under its basename, which class paths such as `test_resume.Interrupt` use."""

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def suite_files(root: Path = TESTS) -> list[Path]:
    return sorted(root.rglob("test_*.py"))


def imported_modules(path: Path) -> set[str]:
    """Every module named by an import written anywhere in the file (at the top or inside a
    function), `from a import b` giving both a and a.b, and importlib.import_module("...")."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    return names


def cross_imports(root: Path = TESTS) -> dict[str, list[str]]:
    """{file relative to root: the test modules (or conftest) it imports, itself excepted}."""
    tests = {p.stem for p in suite_files(root)}
    found = {}
    for path in sorted(root.rglob("*.py")):
        forbidden = {"conftest", *tests - {path.stem}}
        bad = sorted(
            {part for name in imported_modules(path) for part in name.split(".")} & forbidden
        )
        if bad:
            found[path.relative_to(root).as_posix()] = bad
    return found


def test_no_test_module_imports_another():
    assert cross_imports() == {}, "move what they share into tests/seglight_testing/"


def test_cross_imports_are_found(tmp_path):
    """The check itself: top-level, function-level, dotted and importlib imports are found."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "test_a.py").write_text("from seglight_testing import ROOT\n")
    (tmp_path / "test_b.py").write_text("def f():\n    from test_a import make\n")
    (tmp_path / "test_c.py").write_text("import importlib\nimportlib.import_module('test_b')\n")
    (tmp_path / "test_d.py").write_text("from conftest import TINY\nimport data.test_a\n")
    (tmp_path / "helper.py").write_text("import test_d\n")
    assert cross_imports(tmp_path) == {
        "helper.py": ["test_d"],
        "test_b.py": ["test_a"],
        "test_c.py": ["test_b"],
        "test_d.py": ["conftest", "test_a"],
    }


def test_test_file_basenames_are_unique():
    stems = [p.stem for p in suite_files()]
    twice = sorted({s for s in stems if stems.count(s) > 1})
    assert twice == [], f"test files with the same name in two folders: {twice}"
    packages = [p.parent.relative_to(TESTS).as_posix() for p in TESTS.rglob("__init__.py")]
    assert packages == ["seglight_testing"], "test folders are not packages (see the docstring)"
