"""KerasHub (keras-hub) models as Keras sources: a .keras file holding a BertTextClassifier through SavedModel,
TFLite and ONNX; a preset from the local Kaggle cache built from its config alone; a preset that is not cached.

keras_hub imports TensorFlow, and TensorFlow then litert_torch in one process segfaults: so no test imports it here
(no pytest.importorskip, which would), the tiny models are made by a script in a fresh process and the command line
runs in fresh processes too. Skipped where keras-hub is not installed."""
import importlib.util
import json
import subprocess
import sys
import time

import pytest

from tests.conftest import FAST, deploycmp, rows_by_id

pytestmark = pytest.mark.skipif(importlib.util.find_spec("keras_hub") is None,
                                reason="keras-hub is not installed (make install puts it in with --no-deps)")

# a tiny BERT classifier saved as a .keras file, and its backbone saved as the preset bert_tiny_en_uncased would be
# cached by kagglehub, with config.json but no weights file (--weights random builds it from the config alone)
SCRIPT = r"""
import os
import sys
import keras
import keras_hub
from keras_hub.src.utils.preset_utils import BUILTIN_PRESETS
keras.utils.set_random_seed(0)
folder, cache = sys.argv[1], sys.argv[2]
backbone = keras_hub.models.BertBackbone(vocabulary_size=100, num_layers=2, num_heads=2, hidden_dim=32,
                                         intermediate_dim=64, max_sequence_length=64)
keras_hub.models.BertTextClassifier(backbone=backbone, num_classes=3, preprocessor=None).save(
    os.path.join(folder, "tiny.keras"))
handle = BUILTIN_PRESETS["bert_tiny_en_uncased"]["kaggle_handle"]
preset = os.path.join(cache, "models", *handle[len("kaggle://"):].split("/"))
backbone.save_to_preset(preset)
os.remove(os.path.join(preset, "model.weights.h5"))
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kerashub")
    cache = folder / "kagglehub"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(folder), str(cache)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"file": folder / "tiny.keras", "env": {"KAGGLEHUB_CACHE": str(cache)}}


def test_a_kerashub_classifier_file_through_savedmodel_tflite_onnx(tmp_path, tiny):
    out = tmp_path / "run"
    proc = deploycmp("run", "--model", tiny["file"], "--formats", "savedmodel,tflite,onnx", "--shape", "sequence=16",
                     "--samples", "8", "--calibration-samples", "8", "--out", out, "--no-cache", *FAST)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    model = manifest["model"]
    assert (model["kind"], model["task"], model["keras_hub"]["class"]) == ("keras-hub-file", "text-classification",
                                                                           "BertTextClassifier")
    # the model's own inputs, dtypes and ranges: token ids in the vocabulary, segment ids in the segments, a mask
    assert {i["name"]: (i["dtype"], i["shape"], i["value_range"]) for i in model["inputs"]} == {
        "token_ids": ("int32", ["batch", "sequence"], [0, 100]),
        "segment_ids": ("int32", ["batch", "sequence"], [0, 2]),
        "padding_mask": ("int32", ["batch", "sequence"], None)}
    assert [(o["name"], o["shape"], o["kind"]) for o in model["outputs"]] == [("logits", ["batch", 3], "logits")]
    rows = rows_by_id(out)
    formats = {r["format"]: r for r in rows.values()}
    assert set(formats) == {"eager", "savedmodel", "tflite", "onnx"}
    for row in rows.values():
        assert row["status"] == "ok", row
        assert row["drift"]["rel_l2"] < 1e-4 and row["drift"]["top1_agreement"] == 1.0, row  # fp32: small drift
        assert row["shape"] == {"batch": 1, "sequence": 16}
    assert set(formats["tflite"]["runtime_info"]["inputs"]) == {"token_ids", "segment_ids", "padding_mask"}
    # padding masks are realistic: ones, then zeros
    import numpy as np

    with np.load(out / "reference.npz") as f:
        mask = next(f[k] for k in f.files if k.endswith("padding_mask"))
    assert mask.min() == 0 and mask.max() == 1 and np.all(np.diff(mask, axis=1) <= 0)


def test_a_cached_preset_with_random_weights_is_built_from_its_config(tmp_path, tiny):
    out = tmp_path / "run"
    proc = deploycmp("export", "--model", "keras-hub:bert_tiny_en_uncased", "--weights", "random", "--task",
                     "text-classification", "--num-classes", "3", "--formats", "torchscript", "--samples", "4",
                     "--out", out, env=tiny["env"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    model = manifest["model"]
    assert (model["kind"], model["name"], model["task"]) == ("keras-hub-preset", "bert_tiny_en_uncased",
                                                             "text-classification")
    assert model["weights"].startswith("random") and model["conditioning"]["unit_variance_layers"] == ["logits"]
    assert manifest["shapes"]["sequence"] == [64]  # 128 tokens by default, at most the model's 64 positions
    assert {i["name"] for i in model["inputs"]} == {"token_ids", "segment_ids", "padding_mask"}
    assert [o["shape"] for o in model["outputs"]] == [["batch", 3]]


def test_a_preset_that_is_not_cached_is_one_line(tmp_path):
    start = time.monotonic()
    proc = deploycmp("export", "--model", "keras-hub:bert_base_en_uncased", "--out", tmp_path / "r",
                     env={"KAGGLEHUB_CACHE": str(tmp_path / "empty")}, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("deploycmp: ")]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and "not in the local KerasHub cache" in lines[0] and "does not download" in lines[0], lines
    assert not (tmp_path / "r" / "manifest.json").exists()
    assert time.monotonic() - start < 60  # no retries against an unreachable hub
