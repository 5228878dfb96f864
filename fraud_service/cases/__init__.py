"""Investigations: the case service, histories and linked accounts, evidence bundles."""
