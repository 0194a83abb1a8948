"""Tiny Keras models for the tests, written to .keras files by a separate process (run as a script), so the
test process never imports TensorFlow (TensorFlow then litert_torch in one process segfaults)."""
import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import sys
import numpy as np
import keras
keras.utils.set_random_seed(0)
inp = keras.Input((int(sys.argv[3]), int(sys.argv[3]), 3))
h = keras.layers.Conv2D(8, 3, padding="same")(inp)
h = keras.layers.BatchNormalization()(h)
h = keras.layers.ReLU()(h)
h = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(h)
h = keras.layers.GlobalAveragePooling2D()(h)
model = keras.Model(inp, keras.layers.Dense(10)(h))
if sys.argv[2] == "trained":
    # a real trained model: sklearn's 8x8 digits as RGB, a few epochs
    from sklearn.datasets import load_digits
    d = load_digits()
    x = np.repeat((d.images / 16.0)[..., None], 3, axis=-1).astype("float32")
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    hist = model.fit(x, d.target, epochs=10, batch_size=64, verbose=0)
    print("train accuracy", hist.history["accuracy"][-1])
if sys.argv[1].endswith(".keras"):
    model.save(sys.argv[1])
else:
    model.export(sys.argv[1], format="tf_saved_model", verbose=False)
"""


def make(path: Path, trained: bool = False) -> Path:
    """A .keras file (or a SavedModel directory for any other path): random weights on 16x16 inputs, or
    trained on the 8x8 digits."""
    subprocess.run([sys.executable, "-c", SCRIPT, str(path), "trained" if trained else "random", "8" if trained else "16"],
                   check=True, capture_output=True)
    return path


TWO_INPUTS = r"""
import sys
import keras
keras.utils.set_random_seed(0)
ids = keras.Input((16,), dtype="int32", name="ids")
feats = keras.Input((8,), name="feats")
h = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(1000, 8)(ids))
h = keras.layers.Concatenate()([h, keras.layers.Dense(8, activation="relu")(feats)])
keras.Model([ids, feats], keras.layers.Dense(5)(h)).save(sys.argv[1])
"""


def make_two_inputs(path: Path) -> Path:
    """A functional Keras model with two named inputs (int32 token ids [16], float features [8]) -> 5 logits."""
    subprocess.run([sys.executable, "-c", TWO_INPUTS, str(path)], check=True, capture_output=True)
    return path


BAD = r"""
import os
import sys
import shutil
import keras
keras.utils.set_random_seed(0)
folder = sys.argv[1]
inp = keras.Input((16, 16, 3))
h = keras.layers.Lambda(lambda t: t * 2.0)(inp)
h = keras.layers.GlobalAveragePooling2D()(h)
keras.Model(inp, keras.layers.Dense(10)(h)).save(os.path.join(folder, "lambda.keras"))
inp = keras.Input((16, 16, 3))
h = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inp))
keras.Model(inp, keras.layers.Dense(10)(h)).export(os.path.join(folder, "savedmodel"), format="tf_saved_model", verbose=False)
shutil.copytree(os.path.join(folder, "savedmodel"), os.path.join(folder, "no_variables"))
shutil.rmtree(os.path.join(folder, "no_variables", "variables"))
"""


def make_bad(folder: Path) -> dict:
    """In one TensorFlow process: a .keras file with a Lambda layer (code Keras' safe mode refuses to load), a
    SavedModel directory, and a copy of it without its variables/ folder. Returns {"lambda", "savedmodel",
    "no_variables": path}."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", BAD, str(folder)], check=True, capture_output=True)
    return {name: folder / file for name, file in (("lambda", "lambda.keras"), ("savedmodel", "savedmodel"),
                                                   ("no_variables", "no_variables"))}
