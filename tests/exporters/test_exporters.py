"""Each exporter on the tiny model, run back through its runtime adapter and compared with eager PyTorch."""
import numpy as np
import pytest
import torch

from deploycmp import exporters
from deploycmp import runtimes
from tests.tiny_models import tiny_cnn
from deploycmp.export_worker import Source
from deploycmp.rundir import describe_files


@pytest.fixture(scope="module")
def source():
    x = np.random.default_rng(0).standard_normal((4, 3, 16, 16), dtype=np.float32)
    return Source(tiny_cnn().eval(), "torch", x[:1], "NCHW", x)


@pytest.mark.parametrize("fmt", ["torchscript", "torch-export", "onnx"])
def test_export_runs_on_its_runtimes_at_two_batch_sizes(fmt, source, tmp_path):
    out = tmp_path / fmt
    out.mkdir()
    details = exporters.get(fmt).export(source, out, "none")
    assert (out / details["main_file"]).stat().st_size > 0
    assert details["layout"] == "NCHW" and details["dynamic_batch"] is True
    assert details["exporter"]["name"]
    artifact = {"main_file": f"{fmt}/{details['main_file']}", "layout": details["layout"],
                **describe_files(tmp_path, out)}
    with torch.no_grad():
        expected = source.model(torch.from_numpy(source.calibration)).numpy()
    names = runtimes.for_format(fmt)
    assert names, f"no runtime runs {fmt}"
    for name in names:
        session = runtimes.get(name).load(artifact, tmp_path, threads=1)
        for batch in (1, 4):
            got = session.to_numpy(session.run(session.prepare(source.calibration[:batch])))
            assert len(got) == 1 and got[0].shape == (batch, 10)
            np.testing.assert_allclose(got[0], expected[:batch], rtol=1e-4, atol=1e-5)
        assert session.info()["threads"] == 1


def test_onnx_records_the_exporter_and_opset(source, tmp_path):
    details = exporters.get("onnx").export(source, tmp_path, "none")
    assert details["exporter"]["dynamo"] is True
    assert details["exporter"]["opset"] >= 17


def test_unsupported_modes_say_why():
    assert exporters.unsupported_reason("torchscript", "torch", "int8") == \
        "torchscript: no int8 export in this version (eager-mode quantization is deprecated)"
    assert exporters.unsupported_reason("onnx", "tensorflow", "none") == "onnx: no maintained converter from a tensorflow model"
    assert exporters.unsupported_reason("torch-export", "torch", "none") is None
