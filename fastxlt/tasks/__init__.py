"""fastxlt.tasks."""
