"""fastxlt.experiments."""
