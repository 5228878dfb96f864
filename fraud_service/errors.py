"""One exception tree for the whole service; the edges (CLI, HTTP) map it to exit codes and statuses.

Every error raised on purpose is a `FraudServiceError` whose message a user can act on. The kinds the
HTTP face needs to tell apart are classes here (`NotFound`, `Conflict`, `RequestInvalid`,
`Unavailable`, ...); a domain error that is also one of those inherits both, so `api/errors.py` maps
the tree to statuses in one table and the CLI maps all of it to exit code 1.

This module imports nothing: the model registry (`models`, below the core) raises `RegistryError`
from here too.
"""

from __future__ import annotations

from dataclasses import dataclass


class FraudServiceError(Exception):
    """Base of every error the service raises on purpose; its message is meant for a user."""


# -- what the faces tell apart -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One bad field: where (a JSON path), what is wrong, and what was expected."""

    field: str
    problem: str
    expected: str

    def to_dict(self) -> dict[str, str]:
        return {"field": self.field, "problem": self.problem, "expected": self.expected}


class BadRequest(FraudServiceError):
    """The request cannot be read at all (a body that is not a JSON object)."""


class RequestInvalid(FraudServiceError):
    """A request broke the contract; every bad field is listed."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__(f"{len(problems)} invalid field(s): " + "; ".join(
            f"{p.field}: {p.problem}" for p in problems[:5]))


class NotFound(FraudServiceError):
    """What the request names does not exist."""


class Conflict(FraudServiceError):
    """The current state does not allow the change."""


class Unauthorized(FraudServiceError):
    """No valid credentials were presented."""


class Forbidden(FraudServiceError):
    """The caller is known but its role may not do this."""


class Unavailable(FraudServiceError):
    """A store the action depends on cannot be reached; nothing was decided or changed."""


class NotReady(Unavailable):
    """Something the scoring service needs is missing (schema, features, model)."""


class Unstorable(FraudServiceError):
    """The evidence database refused this one record (a value it cannot hold); retrying the same request cannot
    succeed, and nothing was decided."""


class DatabaseDown(Unavailable):
    """The evidence database could not be reached or the transaction could not be committed."""


class EvidenceFileGone(DatabaseDown):
    """The SQLite evidence file this process opened was removed or replaced while it ran: what it would write now
    would land in a file nobody reads again, or in another database."""


class CommitUnconfirmed(DatabaseDown):
    """The transaction holding an assessment was sent, its commit included, and its outcome is not known: the
    assessment may be stored, and the same request again returns it if it is."""


class BatchAbandoned(Exception):
    """Internal to the evidence writer: a batch holds an assessment whose request stopped waiting, so it is rolled
    back and written again without it. Never reaches a caller."""


# -- configuration and data ----------------------------------------------------------------------------------


class ConfigError(FraudServiceError):
    """A FRAUD_* setting is missing or malformed."""


class UpgradeRefused(FraudServiceError):
    """A schema migration refused while other sessions use the database (instances of the code before it)."""


class DatasetError(FraudServiceError):
    """A dataset directory cannot be read as the data contract (no tables, ambiguous files)."""


class ValidationFailed(FraudServiceError):
    """A dataset broke the data contract; carries the row-level report."""

    def __init__(self, report: object, message: str) -> None:
        super().__init__(message)
        self.report = report


class WarehouseError(FraudServiceError):
    """The offline store under FRAUD_HOME is missing, locked or damaged."""


class FeatureStoreError(FraudServiceError):
    """The feature store is not built, or its configuration cannot be written."""


class TrainingDataError(FraudServiceError):
    """The warehouse or features cannot give the training set asked for."""


# -- models --------------------------------------------------------------------------------------------------


class RegistryError(FraudServiceError):
    """A model version or alias is missing, or an artefact does not match its manifest."""


class ModelNotFound(RegistryError, NotFound):
    """No registered model answers to that version or alias."""


class PromotionRefused(RegistryError, Conflict):
    """The alias cannot move as asked (already production, nothing to roll back to, a damaged model)."""


# -- scoring, cases, access ----------------------------------------------------------------------------------


class AssessmentConflict(Conflict):
    """The return was already assessed with a different request body."""


class AssessmentNotFound(NotFound):
    """No assessment with that id."""


class ListEntryExists(Conflict):
    """The token is already on a list."""


class ListEntryNotFound(NotFound):
    """The token is on no list."""


class CaseError(FraudServiceError):
    """A case operation that cannot be done."""


class CaseNotFound(CaseError, NotFound):
    """No case with that id."""


class EntityNotFound(NotFound):
    """No customer or token with that id in the warehouse or the evidence database."""


class CaseConflict(CaseError, Conflict):
    """The case's state does not allow the change (a closed case, a move not allowed, claimed by someone else)."""


class QueueNotFound(CaseError, NotFound):
    """No named queue with that name."""


class BundleError(FraudServiceError):
    """A file is not a readable evidence bundle."""


class ApiKeyError(FraudServiceError):
    """A key cannot be created or found."""


class UserError(FraudServiceError):
    """A user cannot be created, found or changed."""


class TotpError(UserError):
    """Two-factor sign-in cannot be turned on, off or checked as asked (a wrong code, a step out of order)."""


class TotpUnreadable(TotpError):
    """A stored TOTP secret cannot be decrypted with this service's key (FRAUD_HOME's `secret_key` changed)."""


class SignInThrottled(FraudServiceError):
    """Too many failed sign-ins for this user or address: wait `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# -- the returns system's feedback ---------------------------------------------------------------------------


class ReturnNotAssessed(NotFound):
    """No assessment of that return: an inspection or appeal has nothing to attach to."""


class InspectionConflict(Conflict):
    """This inspection (return, inspected_at) was reported before with a different outcome or notes."""


class AppealRefused(Conflict):
    """The assessment's outcome gives the shopper nothing to appeal (the return is approved, or waits for the
    inspection that decides it)."""


class WebhookNotFound(NotFound):
    """No webhook (or no event) with that id."""


class TimeOutOfRange(ValueError):
    """An ISO 8601 time outside the years the features' timestamps hold (`contract.utc_instant`): a ValueError, as
    a time that is no time at all, for the parsers that tell the two apart."""
