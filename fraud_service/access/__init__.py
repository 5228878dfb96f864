"""Who may call: API keys for machines, users for people."""
