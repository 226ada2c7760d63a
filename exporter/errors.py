"""The exporter's error hierarchy.

Every failure a user can cause or meet is one of these, carrying a one-line message that says
what failed and where, and never a secret. The CLI prints `str(error)` and exits non-zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self


class ExporterError(Exception):
    """Base class. `exit_code` is what the CLI returns for it."""

    exit_code = 1


class ConfigError(ExporterError):
    """The configuration (file, environment, flags, rate card, org model) is invalid.

    `problems` are the problems one by one, each a line naming its file (and position) or key;
    the message is the one line that says them all. Without `problems`, the message is the one
    problem. The CLI prints one line per problem.
    """

    exit_code = 2

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems: tuple[str, ...] = tuple(problems) or (message,)

    @classmethod
    def of(cls, problems: Sequence[str]) -> Self:
        """One error for several problems; its message joins them with `; `."""
        return cls("; ".join(problems), problems)


class RetryableError(ExporterError):
    """A transient failure: the same call may succeed later."""


class SourceUnavailable(RetryableError):
    """Sysdig could not be reached, timed out, throttled (429) or answered 5xx."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SourceError(ExporterError):
    """Sysdig answered, but the answer cannot be used (auth, rejected query, malformed body).

    `status` is the HTTP status Sysdig answered with, when there was one.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class SourceAuthError(SourceError):
    """Sysdig rejected the token (401) or its privileges (403)."""


class SourceQueryError(SourceError):
    """Sysdig rejected the query (400/422) or its response is malformed."""


class TeamScopeError(ConfigError):
    """The token's Sysdig team sees only part of the fleet, or whether it does is unknown."""


class IncompleteDataError(ExporterError):
    """The source returned too little data for a period to be published as final."""


class LimitExceeded(IncompleteDataError):
    """Sysdig cut an answer short (a warning, its cap on series) or gave up on a query (its
    timeout): one of its service limits was reached, and a smaller query may be answered whole."""


class SinkUnavailable(RetryableError):
    """The broker could not be reached or timed out."""


class CommitUncertain(SinkUnavailable):
    """A commit may or may not have happened (the broker went away during EndTxn).

    Retrying blindly could publish the period twice: first `recover()` the sink (which settles
    the transaction), then read the checkpoint to learn whether the period was committed.
    """


class SinkError(ExporterError):
    """Publishing failed in a way retries will not fix (topic missing, schema rejected)."""


class TopicMissing(SinkError):
    """A topic the exporter needs does not exist (and may not be created)."""


class FencedError(SinkError):
    """Another instance with the same transactional.id took over; this one must stop."""

    exit_code = 4


class EncodingError(ExporterError):
    """A record could not be encoded under its Avro schema (precision, scale, type)."""


class PricingError(ConfigError):
    """The rate card is invalid or has no price for a record."""


class RetentionError(ExporterError):
    """A period is older than the source keeps data at the needed resolution."""
