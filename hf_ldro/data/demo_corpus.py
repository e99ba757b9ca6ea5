"""The default multilingual data: the conversations shipped in the `chatterbot-corpus` package.

``chatterbot_corpus/data/<language>/*.yml`` holds, per language folder, YAML files with a
``conversations`` list; each conversation is a list of turns. One conversation is one document,
its turns joined by newlines. Files are read in sorted name order and conversations in file order.

Task names are the folder names ("english", "yoruba", "traditionalchinese", ...). They are stable
across package versions and readable, and some folders (such as "hinglish") have no ISO code.

Train/validation split: with n documents in a language and k = max(2, min(10, n)), document i goes
to validation when i % k == k - 1, so every 10th conversation is held out and a language with 2 to
9 conversations still keeps one for validation.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from .sources import DataError, InMemorySource

VALIDATION_PERIOD = 10


def demo_corpus_root() -> Path:
    """Return the ``data`` folder of the installed chatterbot-corpus package."""
    try:
        import chatterbot_corpus
    except ImportError as error:
        raise DataError(
            "The default demo corpus needs the chatterbot-corpus package: pip install "
            "chatterbot-corpus, or pass a data folder, data files or Hub languages."
        ) from error
    return Path(chatterbot_corpus.__file__).resolve().parent / "data"


def demo_languages() -> list[str]:
    """Return the demo corpus languages (folder names), sorted."""
    return sorted(path.name for path in demo_corpus_root().iterdir() if path.is_dir())


def read_demo_documents(language: str) -> list[str]:
    """Return every conversation of `language` as one newline-joined document, in corpus order."""
    folder = demo_corpus_root() / language
    if not folder.is_dir():
        raise DataError(
            f"Unknown demo corpus language {language!r}. Available: {', '.join(demo_languages())}."
        )
    documents = []
    for path in sorted(folder.glob("*.yml")):
        content = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for conversation in content.get("conversations") or []:
            turns = conversation if isinstance(conversation, list) else [conversation]
            text = "\n".join(str(turn) for turn in turns if turn is not None)
            if text.strip():
                documents.append(text)
    return documents


def split_train_validation(documents: list[str]) -> tuple[list[str], list[str]]:
    """Split documents deterministically: every k-th document (k = max(2, min(10, n))) is validation."""
    period = max(2, min(VALIDATION_PERIOD, len(documents)))
    train = [doc for i, doc in enumerate(documents) if i % period != period - 1]
    validation = [doc for i, doc in enumerate(documents) if i % period == period - 1]
    return train, validation


def demo_sources(language: str) -> tuple[InMemorySource, InMemorySource | None]:
    """Return the (train, validation) sources of one demo language; validation is None if empty."""
    train, validation = split_train_validation(read_demo_documents(language))
    where = f"chatterbot-corpus {language}"
    train_source = InMemorySource(language, train, f"{where} (train split)")
    validation_source = (
        InMemorySource(language, validation, f"{where} (validation split)") if validation else None
    )
    return train_source, validation_source
