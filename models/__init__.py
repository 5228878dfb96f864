"""The model registry (imports nothing of the project)."""
