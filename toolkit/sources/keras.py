"""Keras source models: keras.applications by name, .keras files, SavedModel directories. NHWC inputs."""
from __future__ import annotations

import difflib
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from deploycmp.core.errors import DeployError, UsageError
from deploycmp.core.specs import DEFAULT_IMAGE_SIZE
from deploycmp.sources.keras_inputs import describe_inputs, load_error



def imports(record: dict) -> tuple[str, ...]:
    """What an export worker imports to rebuild this source (sources.base.OPTIONAL)."""
    return ("tensorflow", "keras")

PREFIX = "keras:"


def application_names() -> list[str]:
    import keras

    return sorted(n for n in dir(keras.applications) if n[:1].isupper() and callable(getattr(keras.applications, n)))


def set_threads(threads: int, inter_op: int = 1) -> None:
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    except RuntimeError:  # only settable before TensorFlow runs anything
        pass


def check_device(device: str) -> None:
    import tensorflow as tf

    if device == "cuda" and not tf.config.list_physical_devices("GPU"):
        from deploycmp.core.errors import Unavailable

        raise Unavailable(f"tensorflow {tf.__version__} sees no GPU (tensorflow-cpu has no CUDA support)")


def synchronize(device: str) -> None:
    if device == "cuda":
        import tensorflow as tf

        tf.test.experimental.sync_devices()




def _application(name: str, weights: str, warnings: list, record: dict, input_shape):
    import keras

    names = application_names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
        raise UsageError(f"unknown Keras application {name!r}" + (f"; did you mean {', '.join(close)}?" if close else ""))
    app = getattr(keras.applications, name)
    # the inputs it expects: its module's preprocess_input on [0, 255] pixels (keras.src.applications.x -> keras.applications.x)
    record["preprocess"] = {"kind": "keras", "module": app.__module__.replace("keras.src.", "keras.", 1)}

    def factory(**kw):
        if input_shape is not None:
            kw["input_shape"] = tuple(input_shape[1:])
        model = app(**kw)
        if input_shape is None and any(d is None for d in model.input_shape[1:3]):
            side = DEFAULT_IMAGE_SIZE
            model = app(input_shape=(side, side, model.input_shape[-1]), **kw)
        return model

    # logits, not probabilities: a softmax head hides drift (near-uniform outputs on random weights)
    if weights in ("imagenet", "auto"):
        try:
            model = factory(weights="imagenet", classifier_activation=None)
            record["weights"] = "imagenet (keras.applications)"
            return model
        except Exception as e:
            if weights == "imagenet":
                raise DeployError(f"imagenet weights for {name} are not in Keras' cache (~/.keras/models) and could "
                                  f"not be downloaded ({type(e).__name__})") from e
            warnings.append(f"{name} has random weights: imagenet weights are not in Keras' cache and could not be downloaded")
    elif weights in ("random", "random-raw"):
        warnings.append(f"{name} has random weights (--weights {weights}): drift and accuracy say little about a "
                        "trained model")
    keras.utils.set_random_seed(0)
    model = factory(weights=None, classifier_activation=None)
    if weights not in ("auto", "random", "random-raw", "imagenet"):
        if not Path(weights).is_file():
            raise UsageError(f"weights file not found: {weights}")
        try:
            model.load_weights(weights)
        except Exception as e:
            raise UsageError(f"weights file {weights} does not fit {name}: {str(e).splitlines()[0][:160]}") from e
        record["weights_file"] = weights
        return model
    record["weights"] = "random-raw" if weights == "random-raw" else "random"
    return model


def condition(model, record: dict, calibration: dict, inputs: list) -> None:
    """--weights random: BatchNorm moving statistics recalibrated on the calibration split (one pass in training
    mode with momentum 0, so they are that split's statistics), so activations keep a realistic scale.
    keras.applications initialise no layer to a constant, so nothing else is re-initialised."""
    import keras

    if record.get("weights") != "random":
        return
    norms = [layer for layer in _layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    samples = len(next(iter(calibration.values())))
    if norms and samples > 1:
        momentum = [layer.momentum for layer in norms]
        for layer in norms:
            layer.momentum = 0.0
        model(call_args(calibration, inputs), training=True)
        for layer, mo in zip(norms, momentum):
            layer.momentum = mo
    recalibrated = bool(norms) and samples > 1
    head = _centre_head(model, call_args(calibration, inputs))
    steps = ([f"BatchNorm recalibrated on {samples} samples"] if recalibrated else []) + (
        [f"zero mean, unit variance per unit on the calibration inputs: {head}"] if head else [])
    record["weights"] = f"random ({'; '.join(steps) or 'architecture init'})"
    record["conditioning"] = {"reinitialised": [], "batchnorm_recalibrated_on": samples if recalibrated else 0,
                              "unit_variance_layers": [head] if head else []}


def _centre_head(model, args) -> str | None:
    """The last Dense layer, when it gives the model's output, scaled so each unit has zero mean and unit variance
    on the calibration inputs: random features after ReLUs share a positive mean, so otherwise one class wins every
    sample. Returns the layer's name."""
    import keras

    dense = [layer for layer in _layers(model) if isinstance(layer, keras.layers.Dense) and layer.use_bias
             and layer.activation in (None, keras.activations.linear)]
    if not dense or len(model.outputs) != 1 or model.outputs[0].shape[-1] != dense[-1].units:
        return None
    from deploycmp.core.outputs import flatten

    out = next(iter(flatten(model(args, training=False)).values())).reshape(-1, dense[-1].units)  # a dict output too
    if len(out) < 2:
        return None
    mean, std = out.mean(0), np.maximum(out.std(0), 1e-6)
    kernel, bias = (np.asarray(w) for w in dense[-1].get_weights()[:2])
    dense[-1].set_weights([kernel / std, (bias - mean) / std])
    return dense[-1].name


def _layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _layers(layer)


def _savedmodel_as_keras(path: str, input_shape):
    """A SavedModel directory wrapped as a Keras model calling its serving signature."""
    import keras

    layer = keras.layers.TFSMLayer(path, call_endpoint="serving_default")
    inp = keras.Input(tuple(input_shape[1:]))
    out = layer(inp)
    if isinstance(out, dict):
        out = [out[k] for k in sorted(out)]
        out = out[0] if len(out) == 1 else out
    return keras.Model(inp, out)


def build(spec: str, weights: str, given: list, seed: int = 0, num_classes: int | None = None, layout: str | None = None,
          value_ranges: dict | None = None, task: str | None = None):
    """Load the user's Keras model. `given`: input specs from --input/--input-shape (may be empty).
    Returns (model, record for the manifest, warnings)."""
    from deploycmp.sources import kerashub as kerashub_source

    if kerashub_source.is_kerashub(spec):
        return kerashub_source.build(spec, weights, given, seed, num_classes, layout, value_ranges, task)
    if task is not None:
        raise UsageError("--task applies to Hugging Face and KerasHub models (a save_pretrained directory, hf:ID, "
                         "keras-hub:PRESET or a KerasHub .keras file)")
    import keras

    given = list(given or [])
    fixed = len(given) == 1 and all(isinstance(d, int) for d in given[0].shape[1:])
    input_shape = [1, *given[0].shape[1:]] if fixed else None  # keras.applications and SavedModels take one

    if num_classes is not None:
        raise UsageError("--num-classes applies to torchvision models; a Keras model file brings its own head")
    keras.utils.set_random_seed(seed)
    warnings: list[str] = []
    record = {"framework": "keras", "spec": spec, "weights": weights, "layout": "NHWC"}
    if spec.startswith(PREFIX):
        name = spec[len(PREFIX):]
        record.update(kind="keras-application", name=name)
        model = _application(name, weights, warnings, record, input_shape)
    else:
        if weights != "auto":
            raise UsageError(f"--weights {weights} does not apply to a model file ({spec} carries its own weights)")
        record["weights"] = "file"
        if not Path(spec).exists():
            raise UsageError(f"model file not found: {spec}")
        try:
            if spec.endswith(".keras"):
                record.update(kind="keras-file", name=Path(spec).stem)
                model = keras.models.load_model(spec, compile=False)
            else:
                record.update(kind="savedmodel-dir", name=Path(spec).name)
                if input_shape is None:
                    raise UsageError(f"{spec} is a SavedModel: pass --input-shape, e.g. --input-shape 1,224,224,3")
                model = _savedmodel_as_keras(spec, input_shape)
        except UsageError:
            raise
        except Exception as e:
            raise UsageError(load_error(spec, e)) from e
    record["inputs"] = describe_inputs(model, given, spec, layout, value_ranges or {})
    return model, record, warnings


def call_args(feed: dict, inputs: list):
    """What a Keras model is called with: the one array, or a list in the model's input order."""
    arrays = [np.ascontiguousarray(feed[s.name]) for s in inputs]
    return arrays[0] if len(arrays) == 1 else arrays


def save_source(model, record: dict, folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    if record["kind"] == "savedmodel-dir":
        shutil.copytree(record["spec"], folder / "savedmodel")
        return "savedmodel"
    model.save(folder / "model.keras")
    return "model.keras"


def weights_sha256(model, record: dict) -> str:
    """A digest of the model's weights (every variable by path), or of the SavedModel directory's files."""
    import hashlib

    h = hashlib.sha256()
    if record["kind"] == "savedmodel-dir":
        from deploycmp.core.rundir import sha256_file

        root = Path(record["spec"])
        for p in sorted(q for q in root.rglob("*") if q.is_file()):
            h.update(f"{p.relative_to(root)}:{sha256_file(p)}".encode())
        return h.hexdigest()
    for w in model.weights:
        a = np.ascontiguousarray(np.asarray(w))
        h.update(f"{getattr(w, 'path', w.name)}:{a.dtype}:{a.shape}".encode() + a.tobytes())
    return h.hexdigest()


def load_source(run_dir: Path, record: dict, source_file: str):
    import keras

    path = Path(run_dir) / source_file
    if record["kind"] == "savedmodel-dir":
        return _savedmodel_as_keras(str(path), record["inputs"][0]["shape"])
    if record["kind"].startswith("keras-hub"):
        import keras_hub  # noqa: F401  (registers its classes, which load_model looks up)
    return keras.models.load_model(path, compile=False)


def reference_outputs(model, feed: dict, inputs: list) -> dict:
    """The golden outputs by name: the Keras model called eagerly, one sample per call."""
    from deploycmp.core.outputs import flatten

    n = len(next(iter(feed.values())))
    chunks = [flatten(model(call_args({k: a[i:i + 1] for k, a in feed.items()}, inputs), training=False)) for i in range(n)]
    return {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}


def count_gflops(model, args) -> float | None:
    """Not counted for Keras models in this version (the report shows '-')."""
    return None


def example(feed: dict, inputs: list):
    return call_args(feed, inputs)


def batch_works(model, args) -> bool:
    from deploycmp.core.outputs import flatten

    try:
        n = len(args[0] if isinstance(args, list) else args)
        return all(o.shape[0] == n for o in flatten(model(args, training=False)).values())
    except Exception:
        return False


def export_savedmodel(model, path: Path) -> None:
    """A TF SavedModel with a `serving_default` signature and a free batch axis (keras model.export)."""
    model.export(str(path), format="tf_saved_model", verbose=False)


@contextmanager
def temporary_savedmodel(model):
    """The model as a SavedModel in a temporary folder, for converters that start from one (tf2onnx, TFLite)."""
    with tempfile.TemporaryDirectory(prefix="deploycmp-savedmodel-") as tmp:
        path = Path(tmp) / "savedmodel"
        export_savedmodel(model, path)
        yield path
