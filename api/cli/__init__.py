"""The `fraud-service` command line, one module per audience (see main.py)."""
