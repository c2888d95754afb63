"""fastxlt.models."""
