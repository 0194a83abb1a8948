"""Hugging Face transformers models from a save_pretrained directory: the task's head, inputs read from the config,
every PyTorch path at two sequence lengths, and a vision transformer. Tiny configs, random weights, no network."""
import json
import shutil

import numpy as np
import pytest

from tests.conftest import FAST, deploycmp, rows_by_id

transformers = pytest.importorskip("transformers")

TINY_BERT = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 max_position_embeddings=64, num_labels=3)


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    """A BERT classifier's directory with its config only (architectures: BertForSequenceClassification)."""
    out = tmp_path_factory.mktemp("bert") / "tiny-bert"
    config = transformers.BertConfig(**TINY_BERT, architectures=["BertForSequenceClassification"])
    config.save_pretrained(out)
    return out


def test_inputs_task_and_sizes_come_from_the_config(bert_dir):
    from deploycmp.sources.torch import build

    model, record, warnings = build(str(bert_dir), "random", [])
    assert record["kind"] == "hf-dir" and record["task"] == "text-classification"
    assert record["hf"]["architecture"] == "BertForSequenceClassification" and record["hf"]["outputs"] == ["logits"]
    assert [(i["name"], i["dtype"], i["shape"]) for i in record["inputs"]] == [
        ("input_ids", "int64", ["batch", "sequence"]), ("attention_mask", "int64", ["batch", "sequence"]),
        ("token_type_ids", "int64", ["batch", "sequence"])]
    assert record["inputs"][0]["value_range"] == [0, 100] and record["inputs"][2]["value_range"] == [0, 2]
    assert record["default_sizes"] == {"sequence": 64}  # 128, at most max_position_embeddings
    assert any("random weights" in w for w in warnings)
    import torch

    ids = torch.randint(0, 100, (2, 8))
    out = model(ids, torch.ones_like(ids), torch.zeros_like(ids))
    assert list(out) == ["logits"] and out["logits"].shape == (2, 3)


def test_bert_directory_through_every_pytorch_path_at_two_sequence_lengths(bert_dir, tmp_path):
    # fp32 only: ONNX dynamic int8 of a BERT directory is measured end to end (accuracy within 3 pp) in
    # tests/test_text_encoder_example.py, and on the fused graph in tests/exporters/test_onnx_fused.py
    out = tmp_path / "run"
    proc = deploycmp("run", "--model", bert_dir, "--task", "text-classification", "--weights", "random",
                     "--formats", "torchscript,torch-export,onnx", "--shape", "sequence=8,16", "--samples", "8",
                     "--calibration-samples", "8", "--out", out, *FAST)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = rows_by_id(out)
    ok = {(r["format"], r["quantization"], r["shape"]["sequence"]) for r in rows.values() if r["status"] == "ok"}
    for fmt in ("eager", "torchscript", "torch-export", "onnx"):
        assert {(fmt, "none", 8), (fmt, "none", 16)} <= ok, (fmt, sorted(ok))
    onnx = rows["onnx-none-onnxruntime-server-cpu-b1-sequence16"]
    assert onnx["drift"]["output"] == "logits" and onnx["drift"]["max_abs"] < 1e-4 and onnx["throughput_per_s"] > 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["outputs"][0]["name"] == "logits" and manifest["shapes"]["sequence"] == [8, 16]
    trace = json.loads((out / "artifacts" / "torchscript-none.json").read_text())
    assert trace["dynamic_dims"] == ["batch", "sequence"], trace["exporter"]  # BERT's trace generalises
    assert trace["exporter"]["shape_specialisation"].startswith("none: at other sizes of batch, sequence")
    onnx_info = json.loads((out / "artifacts" / "onnx-none.json").read_text())["exporter"]
    assert onnx_info["dynamo"] is True, onnx_info  # forward takes the inputs by name, so dynamic_shapes match
    with np.load(out / "reference.npz") as ref:
        mask = ref["input/attention_mask"]
        assert mask.shape == (8, 8) and set(np.unique(mask)) == {0, 1}  # realistic padding


def test_executorch_quantizes_a_bert(bert_dir, tmp_path):
    """The XNNPACK quantizer used to turn transformers' integer mask arithmetic (arange + 0) into floats, and
    prepare failed; static int8 now lowers, runs and stays close to the source (dynamic int8 takes the same quantizer
    and is covered on a tiny CNN in tests/exporters/test_quantized_paths.py)."""
    out = tmp_path / "run"
    proc = deploycmp("run", "--model", bert_dir, "--weights", "random", "--formats", "executorch", "--quantize", "int8",
                     "--shape", "sequence=8", "--samples", "8", "--calibration-samples", "8", "--runtimes", "executorch",
                     "--out", out, *FAST)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    row = rows_by_id(out)["executorch-int8-executorch-server-cpu-b1-sequence8"]
    assert row["status"] == "ok" and row["drift"]["sqnr_db"] > 15, row
    info = json.loads((out / "artifacts" / "executorch-int8.json").read_text())
    assert info["exporter"]["quantization"]["activations"] == "int8 (static)"


def test_saved_weights_are_loaded_and_a_vision_transformer_works(tmp_path):
    config = transformers.ViTConfig(image_size=16, patch_size=8, hidden_size=32, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=64, num_labels=5,
                                    architectures=["ViTForImageClassification"])
    model = transformers.ViTForImageClassification(config).eval()
    model.save_pretrained(tmp_path / "tiny-vit")
    out = tmp_path / "run"
    proc = deploycmp("run", "--model", tmp_path / "tiny-vit", "--formats", "onnx", "--samples", "8",
                     "--calibration-samples", "8", "--runtimes", "torch,onnxruntime", "--out", out, *FAST)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["task"] == "image-classification" and manifest["model"]["weights"] == "pretrained"
    assert manifest["model"]["inputs"][0]["shape"] == ["batch", 3, 16, 16]
    import torch

    with np.load(out / "reference.npz") as ref:  # the saved weights, not a new random init
        expected = model(pixel_values=torch.from_numpy(ref["input/pixel_values"][:2])).logits.detach().numpy()
        np.testing.assert_allclose(ref["output/logits"][:2], expected, rtol=1e-4, atol=1e-5)
    assert {r["status"] for r in rows_by_id(out).values()} == {"ok"}


def test_a_hub_id_comes_from_the_local_cache(bert_dir, tmp_path):
    """hf:ID is read from the Hugging Face cache layout (hub/models--ORG--NAME/snapshots/REV), never downloaded."""
    snapshot = tmp_path / "hf" / "hub" / "models--tiny--bert" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    model = transformers.BertForSequenceClassification(transformers.BertConfig.from_pretrained(bert_dir)).eval()
    model.save_pretrained(snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc123")
    out = tmp_path / "r"
    proc = deploycmp("export", "--model", "hf:tiny/bert", "--formats", "onnx", "--shape", "sequence=8", "--samples", "4",
                     "--out", out, env={"HF_HOME": str(tmp_path / "hf")})
    assert proc.returncode == 0 and "Loading weights" not in proc.stderr, proc.stderr
    record = json.loads((out / "manifest.json").read_text())["model"]
    assert (record["name"], record["weights"], record["task"]) == ("tiny/bert", "pretrained", "text-classification")


def test_a_hub_id_that_is_not_cached_is_one_line(tmp_path):
    proc = deploycmp("export", "--model", "hf:nobody/not-cached", "--out", tmp_path / "r",
                     env={"HF_HOME": str(tmp_path / "hf")})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "not in the local Hugging Face cache" in proc.stderr, proc.stderr
    proc = deploycmp("export", "--model", "resnet18", "--task", "text-classification", "--out", tmp_path / "r")
    assert proc.returncode == 2 and "--task applies to Hugging Face models" in proc.stderr


WORDS = ["good", "bad", "fine", "great", "awful", "ok", "movie", "plot", "the", "was", "very", "not"]


def _with_tokenizer(bert_dir, tmp_path):
    """A copy of the tiny BERT directory with a WordPiece tokenizer of a few words."""
    out = tmp_path / "bert-with-tokenizer"
    shutil.copytree(bert_dir, out)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    transformers.BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(out)
    return out


def test_texts_are_tokenized_with_the_models_tokenizer(bert_dir, tmp_path):
    model = _with_tokenizer(bert_dir, tmp_path)
    rng = np.random.default_rng(0)
    texts = tmp_path / "reviews.jsonl"
    texts.write_text("".join(json.dumps({"text": " ".join(rng.choice(WORDS, rng.integers(2, 12))), "label": i % 3}) + "\n"
                             for i in range(16)))
    out = tmp_path / "run"
    proc = deploycmp("run", "--model", model, "--data", texts, "--shape", "sequence=8,12", "--formats", "onnx",
                     "--samples", "8", "--calibration-samples", "8", "--runtimes", "onnxruntime", "--out", out, *FAST)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads((out / "manifest.json").read_text())["data"]
    assert data["kind"] == "text" and data["tokenizer"].startswith("BertTokenizer") and data["labeled"]
    assert data["sequence"] == 8 and data["truncated"] > 0
    with np.load(out / "reference.npz") as ref:
        ids, mask = ref["input/input_ids"], ref["input/attention_mask"]
        assert ids.shape == (8, 8) and (ids[:, 0] == 2).all()  # [CLS] first
        assert (ids >= 5).any() and not (ids == 1).any()  # the words' own ids, no [UNK]
        assert ((ids == 0) == (mask == 0)).all()  # padding is masked
        assert set(ref["labels"]) <= {0, 1, 2}
    rows = rows_by_id(out)  # tokenized anew at each length of the sweep
    assert rows["onnx-none-onnxruntime-server-cpu-b1-sequence8"]["drift"]["accuracy"] is not None
    assert rows["onnx-none-onnxruntime-server-cpu-b1-sequence12"]["drift"]["accuracy"] is not None
    with np.load(out / "reference.sequence12.npz") as ref:
        assert ref["input/input_ids"].shape == (8, 12)


def test_texts_need_a_tokenizer(bert_dir, tmp_path):
    texts = tmp_path / "t.txt"
    texts.write_text("good movie\nbad plot\n" * 8)
    proc = deploycmp("export", "--model", bert_dir, "--data", texts, "--shape", "sequence=8", "--formats", "onnx",
                     "--out", tmp_path / "r")
    assert proc.returncode == 2 and "has no tokenizer deploycmp can load" in proc.stderr, proc.stderr
    proc = deploycmp("export", "--model", "tests.tiny_models:tiny_cnn", "--input-shape", "1,3,16,16", "--data", texts,
                     "--out", tmp_path / "r2")
    assert proc.returncode == 2 and "texts need the model's tokenizer" in proc.stderr, proc.stderr
