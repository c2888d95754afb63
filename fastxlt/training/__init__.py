"""fastxlt.training."""
