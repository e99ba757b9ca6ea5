"""mC4 (or any Hub text dataset with one config per language) streamed with `datasets`.

``HubLanguageSource("yo", "yo")`` reads ``load_dataset("allenai/c4", "yo", split="train",
streaming=True)`` row by row and yields the ``"text"`` field. Nothing is downloaded up front and the
number of documents is unknown, so |D_i| must be given (``size``) where static mixing needs it.

``data_files`` replaces the Hub with local JSON Lines files of the same schema (one object per line
with a ``"text"`` field), read through ``load_dataset("json", ..., streaming=True)``. The rest of the
code path (streaming iteration, field checks, sharding, packing) is the same, which is how the tests
exercise it offline.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator, Sequence

from .sources import GZIP_READ_ERRORS, DataError, LanguageSource, gzip_read_error, starts_with_gzip_magic

logger = logging.getLogger(__name__)

MC4_DATASET = "allenai/c4"

# Configs of allenai/c4 that hold one mC4 language each (mC4 3.1.0: 101 languages, six romanized
# variants and "und" for undetermined). Hebrew is "iw", the code mC4 uses.
MC4_LANGUAGE_CODES = (
    "af", "am", "ar", "az", "be", "bg", "bg-Latn", "bn", "ca", "ceb", "co", "cs", "cy", "da",
    "de", "el", "el-Latn", "en", "eo", "es", "et", "eu", "fa", "fi", "fil", "fr", "fy", "ga",
    "gd", "gl", "gu", "ha", "haw", "hi", "hi-Latn", "hmn", "ht", "hu", "hy", "id", "ig", "is",
    "it", "iw", "ja", "ja-Latn", "jv", "ka", "kk", "km", "kn", "ko", "ku", "ky", "la", "lb", "lo",
    "lt", "lv", "mg", "mi", "mk", "ml", "mn", "mr", "ms", "mt", "my", "ne", "nl", "no", "ny",
    "pa", "pl", "ps", "pt", "ro", "ru", "ru-Latn", "sd", "si", "sk", "sl", "sm", "sn", "so",
    "sq", "sr", "st", "su", "sv", "sw", "ta", "te", "tg", "th", "tr", "uk", "und", "ur", "uz",
    "vi", "xh", "yi", "yo", "zh", "zh-Latn", "zu",
)  # fmt: skip


def check_mc4_language_code(code: str) -> str:
    """Return `code` if it is an mC4 config of allenai/c4, else raise a DataError listing them."""
    if code not in MC4_LANGUAGE_CODES:
        raise DataError(
            f"Unknown mC4 language code {code!r}. Available codes: {', '.join(MC4_LANGUAGE_CODES)}."
        )
    return code


class HubLanguageSource(LanguageSource):
    """One language of a Hub dataset, read with ``datasets`` streaming.

    Args:
        name: task name for this language.
        language_code: dataset config (for mC4 a code from `MC4_LANGUAGE_CODES`).
        split: ``"train"`` or ``"validation"`` (mC4's split names).
        dataset_name: Hub dataset id; codes are checked against mC4's list only for allenai/c4.
        size: |D_i| for this language (documents or tokens, in the same unit for every language);
            the stream cannot count a streamed source.
        data_files: local JSON Lines files used instead of the Hub (same schema).
        text_field: name of the text column.
        revision: dataset revision (branch, tag or commit) to pin.
    """

    def __init__(
        self,
        name: str,
        language_code: str,
        split: str = "train",
        dataset_name: str = MC4_DATASET,
        size: float | None = None,
        data_files: Sequence[str | Path] | None = None,
        text_field: str = "text",
        revision: str | None = None,
    ):
        if dataset_name == MC4_DATASET:
            check_mc4_language_code(language_code)
        if size is not None and not size > 0:
            raise DataError(f"size for language {name!r} must be > 0, got {size!r}.")
        self.name = name
        self.language_code = language_code
        self.split = split
        self.dataset_name = dataset_name
        self.size = size
        self.text_field = text_field
        self.revision = revision
        self.data_files = [str(f) for f in data_files] if data_files is not None else None
        if self.data_files is not None:
            for path in self.data_files:
                if not Path(path).is_file():
                    raise DataError(
                        f"Data file {path!r} for language {name!r} was not found: check the path."
                    )

    def describe(self) -> str:
        if self.data_files is not None:
            return f"local files {self.data_files} (Hub schema, streamed)"
        return f"{self.dataset_name} config {self.language_code!r} split {self.split!r} (streamed)"

    def _load_streaming_dataset(self):
        from datasets import load_dataset

        if self.data_files is not None:
            return load_dataset(
                "json", data_files={self.split: self.data_files}, split=self.split, streaming=True
            )
        return load_dataset(
            self.dataset_name,
            self.language_code,
            split=self.split,
            streaming=True,
            revision=self.revision,
        )

    def iter_documents(self) -> Iterator[str]:
        row_index = -1
        try:
            dataset = self._load_streaming_dataset()
            # NOTE: every rank streams all rows and keeps its own share (document index modulo
            # world size), so with W processes each one downloads the whole language.
            for row_index, row in enumerate(dataset):
                text = row.get(self.text_field)
                if not isinstance(text, str):
                    raise DataError(
                        f"{self.describe()}, row {row_index}: missing or non-string text field "
                        f"{self.text_field!r} (columns: {sorted(row)}). Pass --text_field with "
                        f"the column that holds the text (text_field= in Python)."
                    )
                if text.strip():
                    yield text
        except ConnectionError as error:
            raise DataError(
                f"Could not reach {self.describe()}: {error}. Check the network (and that "
                f"HF_HUB_OFFLINE is not set), or use --data_dir with local files of the same "
                f"schema, or hub_data_files= in the Python API."
            ) from error
        except GZIP_READ_ERRORS as error:
            compressed_files = [Path(f) for f in self.data_files or () if str(f).endswith(".gz")]
            if not compressed_files:
                raise
            raise self._gzip_error(compressed_files, error, row_index) from error

    def _gzip_error(self, compressed_files: list[Path], error: Exception, row_index: int) -> DataError:
        """Name the local .gz file that failed, or all of them when reading cannot tell which.

        `datasets` reports neither the file nor the row, so a file that does not start with the
        gzip magic bytes is named when there is one; otherwise the error lists every .gz file.
        """
        position = f"after row {row_index} of the language" if row_index >= 0 else "before the first row"
        for path in compressed_files:
            if starts_with_gzip_magic(path) is False:
                return gzip_read_error(path, error, position)
        if len(compressed_files) == 1:
            return gzip_read_error(compressed_files[0], error, position)
        names = ", ".join(str(path) for path in compressed_files)
        return DataError(
            f"Reading the gzip files of language {self.name!r} failed {position} "
            f"({type(error).__name__}: {error}). One of {names} is truncated or corrupt: test "
            f"each with `gzip -t FILE`, then re-download or re-compress the one that fails."
        )
