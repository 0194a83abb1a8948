"""deploycmp: export a trained model to every deployment format and compare them on the user's own hardware."""

__version__ = "0.1.0"
SCHEMA = 2  # run directory schema: 2 = named, typed inputs and outputs; 1 (one float input `x`) is still read
READABLE_SCHEMAS = (1, 2)
