"""omnishift: where speech fine-tuning makes an LLM forget text, and how to prevent it."""

__version__ = "0.1.0"
