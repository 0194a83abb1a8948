"""The reference runtime rebuilds the pinned source from the run directory, whatever kind of source it was."""
import numpy as np
import torch

from deploycmp import runtimes
from tests.tiny_models import tiny_cnn
from deploycmp.core.specs import InputSpec
from deploycmp.sources import torch as models

IMAGE = [InputSpec("", "float32", ["batch", 3, 16, 16])]


def _roundtrip(tmp_path, model, record):
    name = models.save_source(model, record, tmp_path / "src")
    artifact = {"model": record, "main_file": f"src/{name}", "files": [{"path": f"src/{name}"}]}
    session = runtimes.get("torch").load(artifact, tmp_path, threads=1)
    x = np.random.default_rng(1).standard_normal((2, 3, 16, 16), dtype=np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(session.to_numpy(session.run(session.prepare({"x": x})))["output"], expected)


def test_factory_source(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPLOYCMP_ALLOW_SOURCE", "tests.tiny_models:tiny_cnn")  # as bench allows its workers
    model, record, _ = models.build("tests.tiny_models:tiny_cnn", "auto", IMAGE)
    assert record["weights"] == "factory" and record["inputs"][0]["layout"] == "NCHW"
    _roundtrip(tmp_path, model, record)


def test_torchscript_and_export_file_sources(tmp_path):
    example = torch.zeros(1, 3, 16, 16)
    ts, pt2 = tmp_path / "m.pt", tmp_path / "m.pt2"
    torch.jit.trace(tiny_cnn().eval(), example).save(str(ts))
    batch = torch.export.Dim("batch")
    torch.export.save(torch.export.export(tiny_cnn().eval(), (torch.zeros(2, 3, 16, 16),), dynamic_shapes=({0: batch},)), str(pt2))
    for path, kind in ((ts, "torchscript-file"), (pt2, "torch-export-file")):
        model, record, _ = models.build(str(path), "auto", IMAGE)
        assert record["kind"] == kind and record["weights"] == "file"
        _roundtrip(tmp_path / kind, model, record)


def test_a_pt2_file_tells_its_own_inputs(tmp_path):
    from tests.tiny_models import ids_and_features

    model = ids_and_features().eval()
    args = (torch.randint(0, 1000, (2, 16)), torch.randn(2, 8))
    torch.export.save(torch.export.export(model, args), str(tmp_path / "m.pt2"))
    loaded, record, _ = models.build(str(tmp_path / "m.pt2"), "auto", [], value_ranges={"ids": [0, 1000]})
    assert [(i["name"], i["dtype"], i["shape"], i["value_range"]) for i in record["inputs"]] == [
        ("ids", "int64", ["batch", 16], [0, 1000]), ("feats", "float32", ["batch", 8], None)]
    name = models.save_source(loaded, record, tmp_path / "src")
    session = runtimes.get("torch").load({"model": record, "main_file": f"src/{name}"}, tmp_path, threads=1)
    with torch.no_grad():
        expected = model(*args).numpy()
    np.testing.assert_allclose(session.infer({"ids": args[0].numpy(), "feats": args[1].numpy()})["output"], expected,
                               rtol=1e-5, atol=1e-6)
