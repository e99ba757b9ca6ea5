"""hf_ldro: Lookahead-DRO task weighting for the Hugging Face Trainer."""

__version__ = "0.1.0"
