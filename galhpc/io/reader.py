"""What every galhpc file reader (`Catalog`, `Store`) does in a ``with`` block: close its files at the end."""

from __future__ import annotations

from typing import Self


class Reader:
    """A reader of open files, a context manager that calls `close` when the block ends."""

    def close(self) -> None:
        """Close the reader's open files."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
