"""fastxlt: fast, complete and reproducible X-STILTs (English intermediate-task training for zero-shot cross-lingual transfer)."""

__version__ = "0.1.0"
