"""What goes wrong with the ledger, as exceptions: one family, so a caller catches LedgerError and says it."""

from __future__ import annotations


class LedgerError(RuntimeError):
    """A ledger operation failed; the message says what, and what to do about it."""


class LedgerUnavailable(LedgerError):
    """The ledger file could not be opened for writing (held by another process, unreadable, or its schema could
    not be brought up to date); a run's transaction is queued instead (`dihal.ledger.queue`)."""


class LedgerBusy(LedgerUnavailable):
    """Another process held the file for the whole wait; `holder` names it as DuckDB reported it."""

    def __init__(self, message: str, holder: str):
        super().__init__(message)
        self.holder = holder
