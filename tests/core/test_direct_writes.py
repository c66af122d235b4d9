"""Every file gradleak writes is replaced whole: no source module writes a result file
directly, only through `core/files.py` (`replaced_atomically`, `write_atomically`,
`write_bytes_atomically`), so an interrupted or failed write never leaves half a file where
a result is expected.

The check reads the source: a call that writes a file (`Path.write_text`/`write_bytes`,
`open(..., "w")`, `torch.save`, `numpy.save`, `savefig`, an image's `save`, …) must write
the partial path that `replaced_atomically` yields, or an in-memory buffer. The few direct
writes that remain are listed below with the reason they are there.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

import gradleak

SOURCE = Path(gradleak.__file__).resolve().parent
# The one home of atomic writes.
HOME = "core/files.py"
# Method names that write a file, whatever they are called on.
WRITING_METHODS = frozenset(
    {"write_text", "write_bytes", "savefig", "imsave", "imwrite", "save_file", "tofile"}
    | {"write_table", "to_csv", "to_parquet"}
)
# Modules whose save functions write a file.
SAVING_MODULES = frozenset({"torch", "np", "numpy"})
# Receivers of `.save(path)` that are images or figures (Pillow, matplotlib).
PICTURE_NAMES = ("image", "img", "canvas", "figure", "fig")
WRITE_MODES = frozenset("wax+")
# Functions that write directly, by module and function, and why (the writes inside them
# are not checked).
DIRECT_WRITES: dict[tuple[str, str], str] = {
    ("core/update.py", "SharedUpdate.save"): "an update file saved where the caller says, "
    "written in place",
}


@dataclass(frozen=True)
class Write:
    module: str
    function: str
    line: int
    code: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line} in {self.function}: {self.code}"


def _mode(call: ast.Call, position: int) -> str | None:
    for keyword in call.keywords:
        if keyword.arg == "mode" and isinstance(keyword.value, ast.Constant):
            return str(keyword.value.value)
    if len(call.args) > position and isinstance(call.args[position], ast.Constant):
        return str(call.args[position].value)
    return None


def _writes(call: ast.Call) -> bool:
    """Whether `call` writes a file (by the shape of the call: names, not types)."""
    func = call.func
    if isinstance(func, ast.Name):
        return func.id == "open" and bool(WRITE_MODES & set(_mode(call, 1) or ""))
    if not isinstance(func, ast.Attribute):
        return False
    receiver = func.value
    if func.attr in WRITING_METHODS:
        return True
    if func.attr.startswith("save") and isinstance(receiver, ast.Name):
        if receiver.id in SAVING_MODULES:
            return True
        return func.attr == "save" and receiver.id.lower().endswith(PICTURE_NAMES)
    if func.attr == "open" and not (isinstance(receiver, ast.Name) and receiver.id == "Image"):
        return bool(WRITE_MODES & set(_mode(call, 0) or ""))
    return False


def _safe_names(function: ast.AST) -> set[str]:
    """Names in `function` that hold a partial path of `replaced_atomically` or a buffer."""
    names: set[str] = set()
    for node in ast.walk(function):
        if isinstance(node, ast.withitem) and isinstance(node.optional_vars, ast.Name):
            call = node.context_expr
            if isinstance(call, ast.Call) and _called(call) == "replaced_atomically":
                names.add(node.optional_vars.id)
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and _called(node.value) == "BytesIO"
        ):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def _called(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _touches(call: ast.Call, names: set[str]) -> bool:
    """Whether the call writes to one of `names` (as its receiver or an argument)."""
    used = {n.id for n in ast.walk(call) if isinstance(n, ast.Name)}
    return bool(used & names)


def direct_writes(
    source: str, module: str, listed: Mapping[tuple[str, str], str] = DIRECT_WRITES
) -> list[Write]:
    """Calls in a module's source that write a file other than an atomic partial.

    Args:
        source: the module's text.
        module: its path under the package, e.g. ``report/tables.py``.
        listed: the functions whose direct writes are let through.
    """
    tree = ast.parse(source)
    found: list[Write] = []

    def visit(node: ast.AST, scope: list[str], safe: set[str]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                inner = [*scope, child.name]
                extra = set() if isinstance(child, ast.ClassDef) else _safe_names(child)
                visit(child, inner, safe | extra)
                continue
            if isinstance(child, ast.Call) and _writes(child) and not _touches(child, safe):
                function = ".".join(scope) or "<module>"
                if (module, function) not in listed:
                    found.append(Write(module, function, child.lineno, ast.unparse(child)))
            visit(child, scope, safe)

    visit(tree, [], set())
    return found


def _modules() -> list[Path]:
    return sorted(p for p in SOURCE.rglob("*.py") if p.relative_to(SOURCE).as_posix() != HOME)


def _name(path: Path) -> str:
    return path.relative_to(SOURCE).as_posix()


def test_no_module_writes_a_file_directly() -> None:
    writes = [w for p in _modules() for w in direct_writes(p.read_text("utf-8"), _name(p))]
    assert not writes, "write these through gradleak.core.files:\n" + "\n".join(
        str(w) for w in writes
    )


def test_every_listed_function_still_writes_directly() -> None:
    # The list only shrinks: an entry whose function now writes through core/files.py goes.
    found = {
        (w.module, w.function)
        for module, _ in DIRECT_WRITES
        for w in direct_writes((SOURCE / module).read_text("utf-8"), module, listed={})
    }
    assert set(DIRECT_WRITES) <= found, set(DIRECT_WRITES) - found


@pytest.mark.parametrize(
    ("code", "writes"),
    [
        ("path.write_text('x')", True),
        ("(out / 'a.md').write_bytes(b'')", True),
        ("open(path, 'w')", True),
        ("open(path)", False),
        ("path.open('a', newline='')", True),
        ("path.open(newline='')", False),
        ("Image.open(path)", False),
        ("torch.save(state, path)", True),
        ("torch.load(path)", False),
        ("np.savez(path, a=a)", True),
        ("figure.savefig(path)", True),
        ("image.save(path)", True),
        ("outcome.snapshots.save(out_dir, modality)", False),
    ],
)
def test_the_check_recognises_writes(code: str, writes: bool) -> None:
    call = ast.parse(code, mode="eval").body
    assert isinstance(call, ast.Call)
    assert _writes(call) is writes


def test_the_check_accepts_atomic_partials_and_buffers_only() -> None:
    source = (
        "def good(path, data):\n"
        "    with replaced_atomically(path) as partial:\n"
        "        torch.save(data, partial)\n"
        "    buffer = io.BytesIO()\n"
        "    figure.savefig(buffer, format='png')\n"
        "class Store:\n"
        "    def bad(self, path, data):\n"
        "        torch.save(data, path)\n"
    )
    found = direct_writes(source, "probe.py")
    assert [(w.function, w.line) for w in found] == [("Store.bad", 8)]
