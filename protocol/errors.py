"""Kafka error codes (re-exported from kio so callers need not know kio's layout)."""

from kio.schema.errors import ErrorCode

__all__ = ["ErrorCode", "KafkaError"]


class KafkaError(Exception):
    """An error that maps to a Kafka error code in a response."""

    def __init__(self, code: ErrorCode, message: str | None = None,
                 record_errors: tuple[tuple[int, str], ...] = ()) -> None:
        super().__init__(message or code.name)
        self.code = code
        self.message = message
        self.record_errors = record_errors  # Produce (KIP-467): (index of the record in its batch, why)
