"""The exceptions backbone raises. Every message names what is wrong and what to do."""

from __future__ import annotations


class BackboneError(Exception):
    """Base class of every error raised by backbone."""


class ContractError(BackboneError, TypeError):
    """A contract cannot be used: the message names the file, line, method and fix."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        contract: str | None = None,
        method: str | None = None,
    ) -> None:
        self.file = file
        self.line = line
        self.contract = contract
        self.method = method
        where = ""
        if file is not None:
            where = f"{file}:{line}: " if line is not None else f"{file}: "
        what = ""
        if contract is not None:
            what = f"{contract}.{method}: " if method is not None else f"{contract}: "
        self.reason = message
        super().__init__(f"{where}{what}{message}")


class StaleCodeError(BackboneError):
    """Generated code no longer matches its contract; run `backbone codegen` again."""


class ConfigurationError(BackboneError, ValueError):
    """Options that are invalid or contradict each other."""


class ValidationError(BackboneError, ValueError):
    """An argument given to a producer failed validation; nothing was written."""

    def __init__(self, operation: str, parameter: str, detail: str) -> None:
        self.operation = operation
        self.parameter = parameter
        self.detail = detail
        super().__init__(
            f"{operation}: parameter {parameter!r} is invalid, nothing was published: "
            f"{detail}"
        )


class DecodeError(BackboneError):
    """A stored event could not be turned back into typed arguments.

    ``reason`` is one of the dead-letter reasons: ``malformed-entry``,
    ``missing-payload``, ``undecodable``, ``invalid-payload``, ``unknown-operation``.
    """

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class PublishError(BackboneError):
    """Redis refused a publish; nothing of the failed batch was written."""


class RetiredVersionError(PublishError):
    """The batch holds an operation version that a newer contract retired on this
    stream; nothing of the batch was written. ``marks`` names the versions
    (``contract.operation:version``). Regenerate the producer from the current
    contract."""

    def __init__(self, message: str, marks: tuple[str, ...]) -> None:
        super().__init__(message)
        self.marks = marks


class DeprecatedVersionWarning(UserWarning):
    """An event was written with an operation version a newer contract marked
    deprecated on its stream: it was written; regenerate the producer soon."""


class ReplicationTimeout(PublishError):
    """The events were written to the primary, but fewer replicas than
    ``ProducerOptions.min_replicas`` confirmed them within ``replica_timeout``.

    They are not lost on the primary; a failover before the replicas catch up
    could lose them. ``event_ids`` names them; do not publish them again blindly.
    """

    def __init__(self, message: str, event_ids: list[object], replicas: int) -> None:
        super().__init__(message)
        self.event_ids = event_ids
        self.replicas = replicas


class PublishTimeout(BackboneError, TimeoutError):
    """Redis could not be reached within the producer's publish timeout.

    The events of the failed call were not written, or were written exactly once:
    retries within the timeout are deduplicated by the producer's batch record.
    """


class ConcurrencyError(BackboneError):
    """An aggregate's version was not the one expected: someone else appended
    to it since it was loaded (or the expected-version rule did not hold).
    Nothing was written. Load the aggregate again and retry the command
    (``Repository.execute`` does that).

    ``expected`` is the rule (an int, or an ``ExpectedVersion``), ``actual`` the
    aggregate's version when the append was checked.
    """

    def __init__(
        self,
        aggregate_id: str,
        stream: str,
        expected: object,
        actual: int,
        *,
        attempts: int = 1,
    ) -> None:
        self.aggregate_id = aggregate_id
        self.stream = stream
        self.expected = expected
        self.actual = actual
        self.attempts = attempts
        rule = f"version {expected}" if isinstance(expected, int) else str(expected)
        message = (
            f"aggregate {aggregate_id!r} of {stream} is at version {actual}, but the "
            f"append expected {rule}; nothing was written"
        )
        if attempts > 1:
            message += (
                f" (gave up after {attempts} attempts: it changes too often; raise "
                "attempts, or split the aggregate)"
            )
        else:
            message += "; load it again and retry the command"
        super().__init__(message)
