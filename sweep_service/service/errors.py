"""The errors every use case raises; the REST layer maps them to problem+json (api/problems.py: 404, 409, 422)
and the CLI to one line and exit code 2."""

from __future__ import annotations


class NotFound(LookupError):
    """No sweep with this id."""


class Conflict(Exception):
    """The sweep's status does not allow this change now."""


class Invalid(ValueError):
    """A bad value for one field; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
