"""The Feast feature repository and the feature pipeline (imports nothing of the project)."""
