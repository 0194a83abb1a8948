"""deploycmp's own imports: no cycle, none from a lower layer to a higher one, and the export cache's code digest covers every module, subpackages too."""
from pathlib import Path

from deploycmp.core.cache import folders_digest
from tests.import_graph import LAYERS, cycles, graph, imports, layer, upward


def test_no_module_imports_itself_through_others():
    g = graph()
    assert "deploycmp.measure.bench" in g and "deploycmp.runtimes.onnxruntime" in g and "deploycmp.exporters.onnx" in g
    assert "deploycmp.measure.row" in g["deploycmp.measure.fleet"]  # imports inside functions count too
    assert cycles(g) == []


def test_no_module_imports_a_higher_layer():
    g = graph()
    assert upward(g) == []
    unplaced = [m for m in g if layer(m) < 0]
    assert unplaced == [], f"modules in no layer of tests/import_graph.LAYERS {LAYERS}: {unplaced}"


def test_an_import_from_core_into_the_cli_counts_as_upward():
    g = {"deploycmp.core.errors": {"deploycmp.cli"}, "deploycmp.cli": {"deploycmp.core.errors"}}
    assert upward(g) == ["deploycmp.core.errors -> deploycmp.cli"]


def test_the_graph_finds_a_cycle(tmp_path):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("def f():\n    from deploycmp.b import g\n")
    b.write_text("from deploycmp import a\n")
    known = {"deploycmp.a", "deploycmp.b", "deploycmp"}
    g = {"deploycmp.a": imports(a, "deploycmp.a", known), "deploycmp.b": imports(b, "deploycmp.b", known)}
    assert g == {"deploycmp.a": {"deploycmp.b"}, "deploycmp.b": {"deploycmp.a"}}
    assert cycles(g) == [["deploycmp.a", "deploycmp.b"]]


def test_editing_a_module_in_a_subpackage_changes_the_code_digest(tmp_path: Path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "top.py").write_text("x = 1\n")
    module = tmp_path / "sub" / "deep.py"
    module.write_text("y = 1\n")
    before = folders_digest([tmp_path])
    module.write_text("y = 2\n")
    edited = folders_digest([tmp_path])
    assert edited != before
    module.rename(tmp_path / "sub" / "moved.py")  # the same code under another name: another digest
    assert folders_digest([tmp_path]) not in (before, edited)
