"""fastxlt.export."""
