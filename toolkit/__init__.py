"""deploycmp: export a trained model to every deployment format and compare them on the user's own hardware."""

__version__ = "0.1.0"
SCHEMA = 1
