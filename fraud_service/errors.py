"""One exception tree for the whole service; the edges (CLI, HTTP) map it to exit codes and statuses."""

from __future__ import annotations


class FraudServiceError(Exception):
    """Base of every error the service raises on purpose; its message is meant for a user."""


class ConfigError(FraudServiceError):
    """A FRAUD_* setting is missing or malformed."""


class DatasetError(FraudServiceError):
    """A dataset directory cannot be read as the data contract (no tables, ambiguous files)."""


class ValidationFailed(FraudServiceError):
    """A dataset broke the data contract; carries the row-level report."""

    def __init__(self, report: object, message: str) -> None:
        super().__init__(message)
        self.report = report


class WarehouseError(FraudServiceError):
    """The offline store under FRAUD_HOME is missing, locked or damaged."""
