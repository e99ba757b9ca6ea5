"""Per-language document sources: local text and JSONL files, or documents held in memory.

A source is one language's split (train or validation). It yields the language's documents as
strings, always in the same order, so a document index identifies a document across epochs and
across processes. The stream shards, tokenizes and packs them; sources only read and validate.

File formats (optionally gzip-compressed, ``.gz``):
    ``.jsonl`` / ``.json``: one JSON object per line with a string field (default ``"text"``).
    ``.txt``: one document per line.
Blank lines and empty texts are skipped and are not documents.

Bytes that are not valid UTF-8 raise a `DataError` naming the file and line by default
(``encoding_errors="strict"``). With ``encoding_errors="replace"`` they become U+FFFD and the
number of affected lines per file is logged once as a warning when the source is created.

A ``.gz`` file that is truncated, corrupt or not gzip at all raises a `DataError` naming the file,
the last line read and the fix, both when the source is created and on every later read.
"""

from __future__ import annotations

import abc
import gzip
import json
import logging
import zlib
from pathlib import Path
from typing import IO, Iterator, Sequence

logger = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = (".jsonl", ".json", ".txt")
ENCODING_ERROR_MODES = ("strict", "replace")
GZIP_MAGIC = b"\x1f\x8b"

# Errors that reading a .gz file raises: EOFError (truncated), zlib.error (corrupt deflate data)
# and OSError, which includes gzip.BadGzipFile (not gzip, bad CRC or length).
GZIP_READ_ERRORS = (EOFError, zlib.error, OSError)


class DataError(ValueError):
    """Training data is missing or invalid; the message names the value or file (and line) and the fix."""


class LanguageSource(abc.ABC):
    """One language's documents for one split.

    Attributes:
        name: task name of the language (used as the task name in training and in logs).
        num_documents: number of documents, counted when the source was created; None when the
            source is streamed and its length is unknown (Hub).
        size: explicit |D_i| given by the user (for streamed sources), or None to count it.
    """

    name: str
    num_documents: int | None = None
    size: float | None = None

    @abc.abstractmethod
    def iter_documents(self) -> Iterator[str]:
        """Yield one epoch of documents, always in the same order."""

    @abc.abstractmethod
    def describe(self) -> str:
        """Return where the documents come from, for error messages and logs."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.describe()})"


class InMemorySource(LanguageSource):
    """Documents held in a Python list (the demo corpus, tests, small custom data)."""

    def __init__(self, name: str, documents: Sequence[str], description: str = "in-memory documents"):
        self.name = name
        self._documents = [text for text in documents if text.strip()]
        self._description = description
        self.num_documents = len(self._documents)
        if not self._documents:
            raise DataError(
                f"Language {name!r} has no documents ({description}): add documents, or drop "
                f"the language (leave it out of --languages)."
            )

    def iter_documents(self) -> Iterator[str]:
        return iter(self._documents)

    def describe(self) -> str:
        return self._description


def _open_binary(path: Path) -> IO[bytes]:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


def starts_with_gzip_magic(path: Path) -> bool | None:
    """Return whether `path` starts with the gzip magic bytes, or None if it cannot be read."""
    try:
        with open(path, "rb") as handle:
            return handle.read(len(GZIP_MAGIC)) == GZIP_MAGIC
    except OSError:
        return None


def gzip_read_error(path: Path, error: Exception, position: str = "") -> DataError:
    """Build the DataError for `error`, raised while reading the gzip file `path`.

    `position` says how far reading got (for example "after line 12"), or is empty.
    """
    where = f" {position}" if position else ""
    plain_name = path.name.removesuffix(".gz")
    if isinstance(error, EOFError):
        return DataError(
            f"{path}: the gzip file is truncated, so reading stopped{where} ({error}). "
            f"Re-download the file, or re-compress the original with gzip."
        )
    is_gzip = starts_with_gzip_magic(path)
    if is_gzip is False:
        return DataError(
            f"{path} is not a gzip file although its name ends in .gz ({error}). If it is plain "
            f"text, rename it to {plain_name}; otherwise compress it with gzip."
        )
    if isinstance(error, (zlib.error, gzip.BadGzipFile)):
        return DataError(
            f"{path}: the gzip data is corrupt{where} ({error}). Re-download the file, or "
            f"re-compress the original with gzip."
        )
    return DataError(
        f"{path}: reading the gzip file failed{where} ({type(error).__name__}: {error}). Check "
        f"that the file is readable, then re-download or re-compress it."
    )


def file_format(path: Path) -> str:
    """Return "jsonl" or "txt" from a file name (``.gz`` allowed); raise a DataError otherwise."""
    name = path.name[: -len(".gz")] if path.name.endswith(".gz") else path.name
    for suffix in SUPPORTED_SUFFIXES:
        if name.endswith(suffix):
            return "txt" if suffix == ".txt" else "jsonl"
    raise DataError(
        f"Unsupported file type {str(path)!r}: use one of "
        f"{', '.join(s + '[.gz]' for s in SUPPORTED_SUFFIXES)}."
    )


class TextFileSource(LanguageSource):
    """Documents read from local ``.jsonl``/``.txt`` files (optionally ``.gz``), in file order.

    All files are read once when the source is created, to count the documents and to raise a
    `DataError` on invalid content (missing or empty file, invalid JSON, missing text field,
    invalid UTF-8, truncated or corrupt gzip) before training starts. Later reads raise the same
    errors if a file changed in between.
    """

    def __init__(
        self,
        name: str,
        files: Sequence[str | Path],
        text_field: str = "text",
        encoding_errors: str = "strict",
    ):
        if encoding_errors not in ENCODING_ERROR_MODES:
            raise ValueError(
                f"encoding_errors={encoding_errors!r} is not supported: use one of "
                f"{ENCODING_ERROR_MODES}."
            )
        self.name = name
        self.files = [Path(f) for f in files]
        self.text_field = text_field
        self.encoding_errors = encoding_errors
        if not self.files:
            raise DataError(f"Language {name!r} has no data files: pass at least one file.")
        self.num_documents = self._validate()

    def describe(self) -> str:
        return ", ".join(str(f) for f in self.files)

    def iter_documents(self) -> Iterator[str]:
        for path in self.files:
            for _line_number, text in self._read_file(path):
                yield text

    def _validate(self) -> int:
        total = 0
        for path in self.files:
            if not path.is_file():
                raise DataError(
                    f"Data file {str(path)!r} for language {self.name!r} was not found: check "
                    f"the path, or drop the language (leave it out of --languages)."
                )
            count = sum(1 for _ in self._read_file(path, log_replacements=True))
            if count == 0:
                raise DataError(
                    f"Data file {str(path)!r} for language {self.name!r} contains no documents "
                    f"(no non-empty lines or texts): fill it, or drop the language (leave it "
                    f"out of --languages)."
                )
            total += count
        return total

    def _read_file(self, path: Path, log_replacements: bool = False) -> Iterator[tuple[int, str]]:
        """Yield (line number, document text) for every document in `path`.

        Raises:
            DataError: invalid content, or a ``.gz`` file that is truncated, corrupt or not gzip.
        """
        kind = file_format(path)
        replaced_lines = 0
        line_number = 0
        try:
            with _open_binary(path) as handle:
                for line_number, raw in enumerate(handle, start=1):
                    line, replaced = self._decode_line(path, line_number, raw)
                    replaced_lines += replaced
                    if not line.strip():
                        continue
                    text = line if kind == "txt" else self._parse_json_line(path, line_number, line)
                    if text.strip():
                        yield line_number, text
        except GZIP_READ_ERRORS as error:
            if not path.name.endswith(".gz"):
                raise
            position = f"after line {line_number}" if line_number else "before the first line"
            raise gzip_read_error(path, error, position) from error
        if log_replacements and replaced_lines:
            logger.warning(
                "%s: replaced invalid UTF-8 bytes with U+FFFD on %d lines (encoding_errors='replace').",
                path,
                replaced_lines,
            )

    def _decode_line(self, path: Path, line_number: int, raw: bytes) -> tuple[str, bool]:
        """Return the line as text without BOM and line ending, and whether bytes were replaced."""
        replaced = False
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            if self.encoding_errors == "strict":
                raise DataError(self._utf8_error_message(path, line_number, raw, error)) from None
            line = raw.decode("utf-8", errors="replace")
            replaced = True
        if line_number == 1:
            line = line.removeprefix("\ufeff")
        return line.rstrip("\r\n"), replaced

    @staticmethod
    def _utf8_error_message(path: Path, line_number: int, raw: bytes, error: UnicodeDecodeError) -> str:
        if line_number == 1 and raw.startswith(GZIP_MAGIC) and not path.name.endswith(".gz"):
            return (
                f"{path} is gzip-compressed but its name does not end in .gz: rename it to "
                f"{path.name}.gz, or decompress it."
            )
        return (
            f"{path}, line {line_number}: invalid UTF-8 byte "
            f"{raw[error.start:error.start + 1]!r} at byte offset {error.start} of the line. "
            f"Re-encode the file as UTF-8 (for example with iconv), or pass --encoding_errors "
            f"replace (encoding_errors='replace' in Python) to replace invalid bytes with U+FFFD."
        )

    def _parse_json_line(self, path: Path, line_number: int, line: str) -> str:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            # Some messages end in "at" and expect the position next ("Unterminated string
            # starting at"). The line has no newline, so error.lineno is always 1.
            separator = " " if error.msg.endswith(" at") else " at "
            raise DataError(
                f"{path}, line {line_number}: invalid JSON ({error.msg}{separator}column {error.colno}). "
                f"Each line of a .jsonl file must be one JSON object such as "
                f'{{"{self.text_field}": "..."}}; fix or remove the line.'
            ) from None
        if not isinstance(record, dict) or self.text_field not in record:
            found = sorted(record) if isinstance(record, dict) else type(record).__name__
            raise DataError(
                f"{path}, line {line_number}: missing text field {self.text_field!r} "
                f"(found {found}). Add the field, or pass --text_field with the field your files "
                f"use (text_field= in Python)."
            )
        text = record[self.text_field]
        if not isinstance(text, str):
            raise DataError(
                f"{path}, line {line_number}: field {self.text_field!r} is a "
                f"{type(text).__name__}, expected a string."
            )
        return text
