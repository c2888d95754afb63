"""fastxlt.evaluation."""
