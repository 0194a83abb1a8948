"""Weight loading: the real torchvision path, fed from a cache file the test makes (no hub is reachable)."""
import numpy as np
import pytest
import torch
import torchvision

from deploycmp.core.errors import DeployError, UsageError
from deploycmp.core.specs import InputSpec
from deploycmp.sources import torch as models
from deploycmp.sources.torch_inputs import positional

NAME = "squeezenet1_1"
IMAGE16 = [InputSpec("", "float32", ["batch", 3, 16, 16])]
IMAGE64 = [InputSpec("", "float32", ["batch", 3, 64, 64])]  # a small torchvision model with pretrained weights


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    return tmp_path


def _place_in_cache(torch_home):
    weights = torchvision.models.get_model_weights(NAME).DEFAULT
    torch.manual_seed(123)
    state = torchvision.models.get_model(NAME, weights=None).state_dict()
    path = torch_home / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[1]
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    return state


def test_auto_uses_the_cache(torch_home):
    state = _place_in_cache(torch_home)
    model, record, warnings = models.build(NAME, "auto", None)
    assert record["weights"].startswith("imagenet") and warnings == []
    assert record["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["batch", 3, 224, 224], "value_range": None,
                                 "layout": "NCHW"}]
    assert torch.equal(model.state_dict()["features.0.weight"], state["features.0.weight"])


def test_auto_without_cache_falls_back_to_random_with_a_warning(torch_home):
    model, record, warnings = models.build(NAME, "auto", None)
    assert record["weights"] == "random"
    assert warnings and "random weights" in warnings[0]
    with pytest.raises(DeployError, match="could not be downloaded"):
        models.build(NAME, "imagenet", None)


def test_random_and_file_weights(tmp_path):
    model, record, warnings = models.build(NAME, "random", None)
    assert record["weights"] == "random" and "random weights" in warnings[0]
    path = tmp_path / "w.pt"
    torch.save(model.state_dict(), path)
    again, record, warnings = models.build(NAME, str(path), None)
    assert record["weights_file"] == str(path) and warnings == []
    assert torch.equal(again.state_dict()["features.0.weight"], model.state_dict()["features.0.weight"])


def test_input_shape_follows_the_weights_transforms():
    assert models.default_input_shape("inception_v3") == [1, 3, 299, 299]


def test_flops_by_hand():
    layer = torch.nn.Linear(4, 3)
    assert models.count_gflops(layer, (torch.zeros(2, 4),)) == pytest.approx(2 * 2 * 4 * 3 / 1e9)


def test_flops_are_pytorchs_own_count_without_importing_dynamo():
    """The same total as torch's FlopCounterMode (convolutions, attention, a decomposed op), counted in a process
    where nothing imported torch._dynamo and nothing does after."""
    import subprocess
    import sys

    code = """
import sys, torch, torchvision
from deploycmp.sources.torch import count_gflops
class Attention(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = torch.nn.Linear(32, 96)
    def forward(self, x):
        q, k, v = self.qkv(x).view(2, 10, 3, 4, 8).permute(2, 0, 3, 1, 4)
        return torch.nn.functional.scaled_dot_product_attention(q, k, v).sum(dim=1).softmax(-1)
models = [(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(4)),
           torch.zeros(2, 3, 16, 16)),
          (Attention(), torch.zeros(2, 10, 32)),
          (torchvision.models.squeezenet1_1(num_classes=5), torch.zeros(1, 3, 64, 64))]
for m, x in models:
    m.eval()(x)
sys.modules.pop("torch._dynamo", None)  # torchvision imports it: count as a source that does not
mine = [count_gflops(m, (x,)) for m, x in models]
assert "torch._dynamo" not in sys.modules
from torch.utils.flop_counter import FlopCounterMode
for (m, x), got in zip(models, mine):
    with FlopCounterMode(display=False) as c, torch.no_grad():
        m(x)
    assert got == c.get_total_flops() / 1e9 > 0, (type(m).__name__, got, c.get_total_flops())
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_weights_flag_that_does_not_apply():
    with pytest.raises(UsageError, match="imagenet"):
        models.build("tests.tiny_models:tiny_cnn", "imagenet", IMAGE16)


def test_num_classes_loads_a_fine_tuned_checkpoint(tmp_path):
    torch.manual_seed(1)
    tuned = torchvision.models.get_model(NAME, num_classes=10)
    torch.save(tuned.state_dict(), tmp_path / "tuned.pt")
    model, record, _ = models.build(NAME, str(tmp_path / "tuned.pt"), IMAGE64, num_classes=10)
    assert record["num_classes"] == 10 and model(torch.zeros(1, 3, 64, 64)).shape == (1, 10)
    again = models.load_source(tmp_path, record, "tuned.pt")  # how every worker rebuilds it
    assert again(torch.zeros(1, 3, 64, 64)).shape == (1, 10)
    with pytest.raises(DeployError, match="do not fit the model"):
        models.build(NAME, str(tmp_path / "tuned.pt"), None)  # a 1000-class model cannot take it
    with pytest.raises(UsageError, match="ImageNet weights have 1000 classes"):
        models.build(NAME, "auto", None, num_classes=10)
    with pytest.raises(UsageError, match="applies to torchvision models"):
        models.build("tests.tiny_models:tiny_cnn", "auto", IMAGE16, num_classes=10)


def test_inputs_follow_forward_and_a_model_is_fed_by_name():
    """--input names are checked against forward(), put in its order, and ranges come from the embedding."""
    given = [InputSpec("feats", "float32", ["batch", 8]), InputSpec("ids", "int64", ["batch", 16])]
    model, record, _ = models.build("tests.tiny_models:ids_and_features", "auto", given)
    assert [i["name"] for i in record["inputs"]] == ["ids", "feats"] and record["inputs"][0]["value_range"] == [0, 1000]
    assert positional(record)
    # forward(feats, ids) given only... in the other order: still positional in forward's order
    model, record, _ = models.build("tests.tiny_models:features_first", "auto", given)
    assert [i["name"] for i in record["inputs"]] == ["feats", "ids"]


def test_inputs_that_skip_an_argument_are_passed_by_name(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPLOYCMP_ALLOW_SOURCE", "tests.tiny_models:optional_mask")  # as bench allows its workers
    """An optional argument left out (a mask) makes the inputs non-leading: the model is wrapped to take them by name."""
    given = [InputSpec("ids", "int64", ["batch", 8])]
    model, record, _ = models.build("tests.tiny_models:optional_mask", "auto", given)
    assert not positional(record)
    name = models.save_source(model, record, tmp_path)
    wrapped = models.load_source(tmp_path, record, name)
    ids = torch.randint(0, 1000, (2, 8))
    assert torch.equal(wrapped(ids), model(ids=ids))


def test_well_conditioned_random_init_reinitialises_constant_layers_and_recalibrates_batchnorm():
    from tests.tiny_models import tiny_cnn

    model = tiny_cnn().eval()
    torch.nn.init.zeros_(model.head.weight)  # as torchvision's ViT head
    torch.nn.init.zeros_(model.features[1].weight)  # as a zero-init residual branch's BatchNorm
    x = torch.randn(16, 3, 16, 16) * 3 + 1
    record = {"weights": "random"}
    models.condition(model, record, {"x": x.numpy()}, [InputSpec("x", "float32", ["batch", 3, 16, 16])])
    assert record["conditioning"] == {"reinitialised": ["features.1", "head"], "batchnorm_recalibrated_on": 16,
                                      "unit_variance_layers": ["head"]}
    assert record["weights"] == ("random (re-initialised: features.1, head; BatchNorm recalibrated on 16 samples; "
                                 "zero mean, unit variance per channel on the calibration inputs: head)")
    assert torch.count_nonzero(model.head.weight) > 0 and torch.all(model.features[1].weight == 1)
    conv = model.features[0](x)
    torch.testing.assert_close(model.features[1].running_mean, conv.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)
    assert not model.training and model.features[1].momentum == 0.1
    with torch.no_grad():
        logits = model(x[:8])
    torch.testing.assert_close(logits.mean(0), torch.zeros(10), atol=1e-4, rtol=0)  # the head: centred per class
    torch.testing.assert_close(logits.std(0), torch.ones(10), atol=1e-3, rtol=0)
    plain = {"weights": "random-raw"}
    models.condition(tiny_cnn(), plain, {"x": x.numpy()}, [])
    assert plain == {"weights": "random-raw"}  # the plain init is left alone


def test_a_network_without_normalisation_gets_unit_variance_layers():
    """Default-init AlexNet-like stacks shrink the signal until one class wins every sample: every conv/linear
    layer is given zero mean, unit variance per channel on the calibration inputs."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(8 * 12 * 12, 10)).eval()
    x = np.random.default_rng(0).standard_normal((16, 3, 16, 16), dtype=np.float32)
    record = {"weights": "random"}
    models.condition(model, record, {"x": x}, [InputSpec("x", "float32", ["batch", 3, 16, 16])])
    assert record["conditioning"]["unit_variance_layers"] == ["0", "2", "5"]
    with torch.no_grad():
        logits = model(torch.from_numpy(x[:8]))
    assert len(set(logits.argmax(1).tolist())) > 3
