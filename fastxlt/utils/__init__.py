"""fastxlt.utils."""
