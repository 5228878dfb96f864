"""The feature store adapter: Feast (source), the online reader, live facts."""
