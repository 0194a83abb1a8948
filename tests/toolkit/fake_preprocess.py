"""A stand-in for a keras.applications module: MobileNet-style preprocess_input, without TensorFlow."""


def preprocess_input(x):
    return x / 127.5 - 1.0
