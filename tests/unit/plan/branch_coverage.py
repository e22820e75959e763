"""Branch coverage of the plan layer without a coverage package: `python tests/unit/plan/branch_coverage.py`.

The plan modules are compiled with a probe at every place where control can go one way or another:
the entry of every function, both outcomes of every `if`/`elif`/`while`/`for` (the body entered, the
loop left without `break`; an `if` without `else` gets one), both arms of every conditional expression,
and every `except` handler. The plan tests then run in this process against the probed modules, and
every probe that was never reached is listed; the exit status is non-zero if any was missed or a test
failed. Extra arguments go to pytest (default: the plan tests).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PLAN = ROOT / "operator" / "posttrain" / "plan"
MODULES = ("types", "conditions", "graph", "reconcile", "driver")  # in import order

probes: dict[str, str] = {}
"""probe id (`module:line:outcome`) -> the source it belongs to."""
reached: set[str] = set()


def _reach(probe: str) -> None:
    reached.add(probe)


def _reach_value(probe: str, value: object) -> object:
    reached.add(probe)
    return value


class _Probes(ast.NodeTransformer):
    """Inserts a call of `_reach` (or `_reach_value` inside expressions) at every outcome."""

    def __init__(self, module: str) -> None:
        self.module = module

    def _probe(self, node: ast.stmt | ast.expr | ast.excepthandler, outcome: str) -> str:
        probe = f"{self.module}:{node.lineno}:{outcome}"
        probes[probe] = ast.unparse(node).splitlines()[0][:100]
        return probe

    def _call(self, node: ast.stmt | ast.expr | ast.excepthandler, outcome: str) -> ast.stmt:
        probe = self._probe(node, outcome)
        return ast.Expr(ast.Call(ast.Name("__reach__", ast.Load()), [ast.Constant(probe)], []))

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.FunctionDef:
        self.generic_visit(node)
        node.body.insert(0, self._call(node, "entry"))
        return node

    def visit_If(self, node: ast.If) -> ast.If:
        self.generic_visit(node)
        node.body.insert(0, self._call(node, "true"))
        node.orelse = [self._call(node, "false"), *node.orelse]
        return node

    def visit_For(self, node: ast.For) -> ast.For:
        self.generic_visit(node)
        node.body.insert(0, self._call(node, "body"))
        node.orelse = [self._call(node, "done"), *node.orelse]
        return node

    def visit_While(self, node: ast.While) -> ast.While:
        self.generic_visit(node)
        node.body.insert(0, self._call(node, "body"))
        node.orelse = [self._call(node, "done"), *node.orelse]
        return node

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> ast.ExceptHandler:
        self.generic_visit(node)
        node.body.insert(0, self._call(node, "except"))
        return node

    def visit_IfExp(self, node: ast.IfExp) -> ast.IfExp:
        self.generic_visit(node)
        for arm, outcome in (("body", "true"), ("orelse", "false")):
            value = getattr(node, arm)
            probe = self._probe(node, outcome)
            wrapped = ast.Call(ast.Name("__reach_value__", ast.Load()), [ast.Constant(probe), value], [])
            setattr(node, arm, wrapped)
        return node


def load_probed_modules() -> None:
    """Replace the plan modules in `sys.modules` by probed builds of their source."""
    sys.path[:0] = [str(ROOT / "operator"), str(ROOT / "trainer"), str(ROOT)]
    package = importlib.import_module("posttrain.plan")
    for name in MODULES:
        path = PLAN / f"{name}.py"
        tree = ast.fix_missing_locations(_Probes(name).visit(ast.parse(path.read_text())))
        full = f"posttrain.plan.{name}"
        spec = importlib.util.spec_from_file_location(full, path)
        assert spec is not None
        module = importlib.util.module_from_spec(spec)
        module.__dict__.update(__reach__=_reach, __reach_value__=_reach_value)
        sys.modules[full] = module  # before running it: dataclasses look their module up
        exec(compile(tree, str(path), "exec"), module.__dict__)
        setattr(package, name, module)


def main(argv: list[str]) -> int:
    """Run the tests against probed modules and report the probes never reached."""
    load_probed_modules()
    import pytest

    code = pytest.main(["-q", "-p", "no:cacheprovider", *(argv or [str(Path(__file__).parent)])])
    missed = sorted(set(probes) - reached, key=lambda p: (p.split(":")[0], int(p.split(":")[1])))
    print(f"\nplan branch probes: {len(probes)}, reached: {len(probes) - len(missed)}, missed: {len(missed)}")
    for probe in missed:
        print(f"  missed {probe}  | {probes[probe]}")
    return int(code) or (1 if missed else 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
