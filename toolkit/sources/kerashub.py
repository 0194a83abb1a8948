"""KerasHub (keras-hub) backbones and classifiers as Keras sources: `keras-hub:PRESET` read from the local
KerasHub/Kaggle (or Hugging Face) cache, never downloaded, or a `.keras` file that holds a KerasHub model. The head
follows `--task`, in hf_source's words: a `*TextClassifier` or `*ImageClassifier` gives its logits, a `*Backbone`
its sequence output (feature-extraction). Inputs are the model's own (token_ids, padding_mask, segment_ids ...,
with the dtypes it declares); token ids range over the backbone's vocabulary, segment ids over its segments.
The model is called without its preprocessor (tokenizer): deploycmp feeds token ids."""
from __future__ import annotations

import difflib
import json
import os
import re
import zipfile
from pathlib import Path

from deploycmp.core.errors import UsageError
from deploycmp.core.specs import DEFAULT_IMAGE_SIZE
from deploycmp.sources.hf import default_sequence

PREFIX = "keras-hub:"
# task (hf_source.TASKS' words, which the CLI's --task offers) -> (the keras_hub.models base class, the output used)
TASKS = {
    "text-classification": ("TextClassifier", "logits"),
    "image-classification": ("ImageClassifier", "logits"),
    "feature-extraction": ("Backbone", "sequence_output"),
}
DEFAULT_CLASSES = 2  # a new classification head on a backbone preset without --num-classes (as transformers does)


def is_kerashub(spec: str) -> bool:
    """`keras-hub:PRESET`, or a .keras file whose config names a keras_hub class (read from the zip, no import)."""
    return spec.startswith(PREFIX) or (spec.endswith(".keras") and Path(spec).is_file() and _names_keras_hub(spec))


def _names_keras_hub(path: str) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            config = json.loads(z.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return False  # Keras says what is wrong with the file

    def walk(node) -> bool:
        if isinstance(node, dict):
            if (str(node.get("module") or "").startswith("keras_hub")
                    or str(node.get("registered_name") or "").startswith("keras_hub>")):
                return True
            return any(walk(v) for v in node.values())
        return isinstance(node, list) and any(walk(v) for v in node)

    return walk(config)


def _kaggle_cache() -> Path:
    try:
        from kagglehub.config import get_cache_folder

        return Path(get_cache_folder())
    except ImportError:
        return Path(os.environ.get("KAGGLEHUB_CACHE", Path.home() / ".cache" / "kagglehub"))


def preset_dir(spec: str) -> str:
    """The local directory of `keras-hub:PRESET`: a preset directory, a built-in preset name or a kaggle:// handle
    from the Kaggle cache (kagglehub's layout), or an hf:// handle from the Hugging Face cache. Never the network."""
    preset = spec[len(PREFIX):]
    if not preset:
        raise UsageError(f"--model {spec}: give a preset, e.g. keras-hub:bert_tiny_en_uncased")
    if Path(preset).expanduser().is_dir():
        folder = Path(preset).expanduser()
        if not (folder / "config.json").is_file():
            raise UsageError(f"--model {spec}: {folder} has no config.json; a KerasHub preset directory is what "
                             "save_to_preset() writes")
        return str(folder)
    fetch = (f"deploycmp does not download: load it once with keras_hub.models.Backbone.from_preset({preset!r}) "
             "where there is a network, or give a preset directory (keras-hub:DIR) or a .keras file")
    if preset.startswith("hf://"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from huggingface_hub import snapshot_download

        try:
            return snapshot_download(preset[len("hf://"):], local_files_only=True)
        except Exception as e:
            raise UsageError(f"--model {spec}: not in the local Hugging Face cache ({type(e).__name__}); {fetch}") from e
    handle = preset
    if "://" not in preset:
        if "/" in preset or preset.startswith("."):
            raise UsageError(f"--model {spec}: no such preset directory {preset}")
        import keras_hub  # noqa: F401  (fills the table of built-in presets; handles and folders need no import)
        from keras_hub.src.utils.preset_utils import BUILTIN_PRESETS

        if preset not in BUILTIN_PRESETS:
            close = difflib.get_close_matches(preset, list(BUILTIN_PRESETS), n=3, cutoff=0.6)
            raise UsageError(f"--model {spec}: {preset!r} is no KerasHub preset name, kaggle:// or hf:// handle or "
                             "preset directory"
                             + (f"; did you mean {', '.join(close)}?" if close else ""))
        handle = BUILTIN_PRESETS[preset]["kaggle_handle"]
    if not handle.startswith("kaggle://"):
        raise UsageError(f"--model {spec}: expected a preset name, a directory, kaggle://OWNER/MODEL/keras/VARIATION"
                         "[/VERSION] or hf://ORG/MODEL")
    parts = handle[len("kaggle://"):].strip("/").split("/")
    if len(parts) not in (4, 5):
        raise UsageError(f"--model {spec}: a Kaggle handle is kaggle://OWNER/MODEL/keras/VARIATION[/VERSION]")
    base = _kaggle_cache() / "models" / Path(*parts[:4])
    versions = [parts[4]] if len(parts) == 5 else sorted(
        (p.name for p in base.glob("*") if p.name.isdigit()), key=int, reverse=True)
    for version in versions:
        if (base / version / "config.json").is_file():
            return str(base / version)
    where = base / versions[0] if versions else base
    raise UsageError(f"--model {spec}: not in the local KerasHub cache ({where}); {fetch}")


def _task_of(model) -> str | None:
    import keras_hub

    for task, (cls, _) in TASKS.items():
        if isinstance(model, getattr(keras_hub.models, cls)):
            return task
    return None


def _unsupported_task(task: str, spec: str):
    return UsageError(f"--task {task} is not available for KerasHub models ({spec}); they take "
                      f"{', '.join(TASKS)}")


def _from_file(spec: str, task: str | None):
    import keras
    import keras_hub

    from deploycmp.sources.keras_inputs import load_error

    try:
        model = keras.models.load_model(spec, compile=False)
    except Exception as e:
        raise UsageError(load_error(spec, e)) from e
    if isinstance(model, keras_hub.models.Task):
        model.preprocessor = None  # token ids in; its tokenizer is not part of a deployed graph
    own = _task_of(model)
    if task is None:
        if own is None:
            raise UsageError(f"{spec} holds a KerasHub {type(model).__name__}: deploycmp takes KerasHub backbones and "
                             f"classifiers ({', '.join(TASKS)})")
        task = own
    if task == "feature-extraction" and own != task and getattr(model, "backbone", None) is not None:
        model = model.backbone
    elif task != own:
        raise UsageError(f"--task {task}: {spec} holds a KerasHub {type(model).__name__} without that head; the "
                         "file brings its own (give --task feature-extraction for its backbone's outputs)")
    return model, task


def _from_preset(spec: str, folder: str, task: str | None, load_weights: bool, num_classes: int | None,
                 warnings: list):
    """The preset's backbone, or its classifier: the saved one (task.json), else a new head (--num-classes, else 2)."""
    import keras_hub

    saved = None
    if (Path(folder) / "task.json").is_file():
        saved = json.loads((Path(folder) / "task.json").read_text()).get("class_name")
    if task is None:
        task = next((t for t, (cls, _) in TASKS.items() if saved and saved.endswith(cls)), "feature-extraction")
    cls = getattr(keras_hub.models, TASKS[task][0])
    try:
        if task == "feature-extraction":
            return cls.from_preset(folder, load_weights=load_weights), task
        kw = {"preprocessor": None}
        if num_classes is not None or not (saved and saved.endswith(TASKS[task][0])):
            kw["num_classes"] = num_classes or DEFAULT_CLASSES
            if load_weights:
                warnings.append(f"{spec}: a new {task} head with {kw['num_classes']} classes and random weights on "
                                "the pretrained backbone (the preset has no such head): its outputs say little "
                                "until it is trained")
        return cls.from_preset(folder, load_weights=load_weights, **kw), task
    except (OSError, ValueError, KeyError, TypeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UsageError(f"--model {spec}: the preset in {folder} could not be loaded as a KerasHub "
                         f"{TASKS[task][0]}: {first[:200]}") from e


def _preset_weights(spec: str, folder: str, weights: str, warnings: list) -> str:
    """What --weights means for a preset: pretrained (auto, when the cache holds the weights), random (from the
    config alone), or a weights file."""
    if weights == "imagenet":
        raise UsageError("--weights imagenet applies to torchvision and keras.applications models; a KerasHub preset "
                         "brings its own")
    if weights not in ("auto", "random", "random-raw") and not Path(weights).is_file():
        raise UsageError(f"weights file not found: {weights}")
    if weights == "auto":
        config = json.loads((Path(folder) / "config.json").read_text())
        if "registered_name" not in config or (Path(folder) / "model.weights.h5").is_file():
            return "pretrained"  # a KerasHub preset with its weights, or a transformers/timm checkpoint
        warnings.append(f"{spec} has no weights file (model.weights.h5) in {folder}: random weights from its config")
        return "random"
    if weights in ("random", "random-raw"):
        warnings.append(f"{spec} has random weights (--weights {weights}): drift and accuracy say little about a "
                        "trained model")
    return weights


def _head(model, task: str):
    """The model as a functional model deploycmp calls: its inputs as a list of named Inputs (a KerasHub model takes
    a dict, and Keras refuses a list for it), returning {the task's output: tensor} (a backbone's sequence output
    alone, its pooled output dropped)."""
    import keras

    inputs = [keras.Input(shape=tuple(t.shape[1:]), dtype=t.dtype, name=_input_name(t, i))
              for i, t in enumerate(model.inputs)]
    if isinstance(model.input, dict):
        mine = {id(t): x for t, x in zip(model.inputs, inputs)}
        out = model({key: mine[id(t)] for key, t in model.input.items()})
    else:
        out = model(inputs[0] if len(inputs) == 1 else inputs)
    key = TASKS[task][1]
    if not isinstance(out, dict):
        out = {key: out}
    elif key in out:
        out = {key: out[key]}
    return keras.Model(inputs, out, name=f"{model.name}_{key}")


def _input_name(tensor, i: int) -> str:
    """The input's own name; `images` for the one image input KerasHub's image backbones leave unnamed."""
    name = tensor.name.split(":")[0]
    if re.fullmatch(r"(keras_tensor|input_layer)(_\d+)?", name):
        return "images" if len(tensor.shape) == 4 and "float" in str(tensor.dtype) else f"input_{i}"
    return name


def _own_ranges(backbone, model) -> dict:
    """Value ranges the backbone tells: token ids in [0, vocabulary), segment ids in [0, segments)."""
    config = backbone.get_config()
    known = {"token_ids": getattr(backbone, "vocabulary_size", None) or config.get("vocabulary_size"),
             "segment_ids": getattr(backbone, "num_segments", None) or config.get("num_segments")}
    names = {t.name.split(":")[0] for t in model.inputs}
    return {name: [0, int(n)] for name, n in known.items() if n and name in names}


def build(spec: str, weights: str, given: list, seed: int, num_classes: int | None, layout: str | None,
          value_ranges: dict | None, task: str | None):
    """The KerasHub model with the task's head; (model, record for the manifest, warnings)."""
    if task is not None and task not in TASKS:
        raise _unsupported_task(task, spec)
    folder = preset_dir(spec) if spec.startswith(PREFIX) else None  # before TensorFlow: a handle not cached fails fast
    import keras
    import keras_hub

    from deploycmp.sources.keras_inputs import describe_inputs

    warnings: list[str] = []
    keras.utils.set_random_seed(seed)
    if folder:
        used = _preset_weights(spec, folder, weights, warnings)
        model, task = _from_preset(spec, folder, task, used == "pretrained", num_classes, warnings)
        parts = spec[len(PREFIX):].rstrip("/").split("/")  # a name, a handle or a folder; a version number dropped
        name = parts[-2] if len(parts) > 1 and parts[-1].isdigit() else parts[-1]
        record = {"kind": "keras-hub-preset", "name": name, "preset_dir": folder, "weights": used}
        if used not in ("pretrained", "random", "random-raw"):
            try:
                model.load_weights(used)
            except Exception as e:
                raise UsageError(f"weights file {used} does not fit {spec}: {str(e).splitlines()[0][:160]}") from e
            record.update(weights="file", weights_file=used)
    else:
        if weights != "auto":
            raise UsageError(f"--weights {weights} does not apply to a model file ({spec} carries its own weights)")
        if num_classes is not None:
            raise UsageError("--num-classes applies to torchvision models and KerasHub presets; a model file brings "
                             "its own head")
        model, task = _from_file(spec, task)
        record = {"kind": "keras-hub-file", "name": Path(spec).stem, "weights": "file"}
    backbone = getattr(model, "backbone", model)
    record.update(framework="keras", spec=spec, task=task, layout="NHWC",
                  keras_hub={"version": keras_hub.__version__, "class": type(model).__name__,
                             "backbone": type(backbone).__name__, "outputs": [TASKS[task][1]]})
    model = _head(model, task)
    ranges = {**_own_ranges(backbone, model), **(value_ranges or {})}
    record["inputs"] = describe_inputs(model, given, spec, layout, ranges)
    record["default_sizes"] = default_sizes(backbone, record["inputs"])
    return model, record, warnings


def default_sizes(backbone, inputs: list[dict]) -> dict:
    """Sizes of named dimensions no --shape gives: 128 tokens (at most the backbone's positions), images 224."""
    most = getattr(backbone, "max_sequence_length", None) or backbone.get_config().get("max_sequence_length")
    sizes = {"sequence": default_sequence(most)}
    for i in inputs:
        if i["dtype"] in ("float32", "float16", "bfloat16") and len(i["shape"]) == 4:
            sizes.update({d: DEFAULT_IMAGE_SIZE for d in i["shape"][1:3] if isinstance(d, str)})
    return sizes

