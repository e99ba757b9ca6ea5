"""Select the training languages from one data origin and build their train/validation sources.

Origins (exactly one, or none for the demo corpus):
    data folder: ``<data_dir>/<lang>/{train,validation}.{jsonl,json,txt}[.gz]``; task name = folder.
        Folders whose names start with '.' or '_' (``.cache``, ``__pycache__``) are not languages.
    file lists: ``["eng=a.jsonl,b.jsonl", ...]`` or ``{"eng": [paths]}`` for train (and validation).
    Hub: mC4 language codes streamed from allenai/c4; task name = code.
    demo: the chatterbot-corpus conversations (see `demo_corpus`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from .demo_corpus import demo_languages, demo_sources
from .hub import MC4_DATASET, HubLanguageSource
from .sources import SUPPORTED_SUFFIXES, DataError, LanguageSource, TextFileSource

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation")
SKIPPED_FOLDER_PREFIXES = (".", "_")


@dataclass
class LanguageData:
    """Languages selected for training, in task order.

    Attributes:
        task_names: task order (task id = index).
        train_sources: train source per task.
        validation_sources: validation source per task; languages without one are absent.
        sizes: |D_i| per task: documents counted in the train split for local and demo data, the
            given size for Hub languages (None where none was given). `TaskStratifiedStream`
            counts tokens instead (its `dataset_sizes`).
        origin: "data_dir", "files", "hub" or "demo".
    """

    task_names: list[str]
    train_sources: dict[str, LanguageSource]
    validation_sources: dict[str, LanguageSource] = field(default_factory=dict)
    sizes: dict[str, float | None] = field(default_factory=dict)
    origin: str = "demo"


def check_no_duplicates(description: str, names: Sequence[str]) -> None:
    duplicates = sorted({name for name in names if list(names).count(name) > 1})
    if duplicates:
        raise DataError(f"Duplicate languages in {description}: {duplicates}. List each language once.")


def select_languages(requested: Sequence[str] | None, available: Sequence[str], where: str) -> list[str]:
    """Return `requested` (all of `available` when None), raising a DataError on unknown or repeated ones."""
    if requested is None:
        return list(available)
    requested = list(requested)
    if not requested:
        raise DataError(f"The language list is empty: name at least one language from {where}.")
    check_no_duplicates("the language list", requested)
    unknown = [name for name in requested if name not in available]
    if unknown:
        raise DataError(
            f"Unknown languages {unknown} in {where}. Available: {', '.join(available)}."
        )
    return requested


def list_language_folders(root: Path) -> list[str]:
    """Return the sorted names of the subfolders of `root`, without those starting with '.' or '_'.

    Hidden folders and tool folders such as ``.cache``, ``.git`` and ``__pycache__`` are skipped.
    """
    names = []
    for path in sorted(root.iterdir()):
        if not path.is_dir():
            continue
        if path.name.startswith(SKIPPED_FOLDER_PREFIXES):
            logger.debug("Skipping folder %s: names starting with '.' or '_' are not languages.", path)
            continue
        names.append(path.name)
    return names


def check_no_skipped_names(requested: Sequence[str] | None, root: Path) -> None:
    """Raise a DataError if a requested language is a folder that `list_language_folders` skips."""
    skipped = [name for name in requested or () if name.startswith(SKIPPED_FOLDER_PREFIXES)]
    if skipped:
        raise DataError(
            f"Languages {skipped} in data folder {str(root)!r} start with '.' or '_', and such "
            f"folders are skipped as hidden or cache folders: rename the language folders."
        )


def find_split_file(folder: Path, split: str) -> Path | None:
    """Return the one ``<split>.<format>[.gz]`` file in `folder`, None if absent; error if several."""
    candidates = [
        folder / f"{split}{suffix}{gz}" for suffix in SUPPORTED_SUFFIXES for gz in ("", ".gz")
    ]
    found = [path for path in candidates if path.is_file()]
    if len(found) > 1:
        raise DataError(
            f"Several {split} files in {folder}: {[p.name for p in found]}. Keep exactly one."
        )
    return found[0] if found else None


def parse_file_lists(files: Sequence[str] | Mapping[str, Sequence[str | Path]], description: str) -> dict[str, list[Path]]:
    """Parse ``["lang=path[,path...]", ...]`` or a mapping into {language: [paths]}."""
    if isinstance(files, Mapping):
        return {name: [Path(p) for p in paths] for name, paths in files.items()}
    names: list[str] = []
    parsed: dict[str, list[Path]] = {}
    for entry in files:
        name, separator, paths = str(entry).partition("=")
        if not separator or not name.strip() or not paths.strip():
            raise DataError(
                f"Invalid {description} entry {entry!r}: write LANG=PATH, with several files of one "
                f"language separated by commas (eng=a.jsonl,b.jsonl)."
            )
        names.append(name.strip())
        parsed[name.strip()] = [Path(p.strip()) for p in paths.split(",") if p.strip()]
    check_no_duplicates(description, names)
    return parsed


def load_from_data_dir(
    data_dir: str | Path,
    languages: Sequence[str] | None,
    text_field: str,
    encoding_errors: str,
) -> LanguageData:
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"Data folder {str(root)!r} was not found: check the path.")
    check_no_skipped_names(languages, root)
    available = list_language_folders(root)
    if not available:
        raise DataError(
            f"Data folder {str(root)!r} has no language subfolders: lay it out as "
            f"<data_dir>/<lang>/train.jsonl[.gz] (and validation.jsonl[.gz])."
        )
    selected = select_languages(languages, available, f"data folder {root}")
    train, validation = {}, {}
    for name in selected:
        folder = root / name
        train_file = find_split_file(folder, "train")
        if train_file is None:
            raise DataError(
                f"Language folder {str(folder)!r} has no train file: add train.jsonl[.gz] or "
                f"train.txt[.gz], or drop the language (leave it out of --languages)."
            )
        train[name] = TextFileSource(name, [train_file], text_field, encoding_errors)
        validation_file = find_split_file(folder, "validation")
        if validation_file is None:
            logger.warning("Language %r has no validation file in %s: it gets no evaluation set.", name, folder)
        else:
            validation[name] = TextFileSource(name, [validation_file], text_field, encoding_errors)
    sizes = {name: float(source.num_documents) for name, source in train.items()}
    return LanguageData(selected, train, validation, sizes, origin="data_dir")


def load_from_files(
    train_files: Sequence[str] | Mapping[str, Sequence[str | Path]],
    validation_files: Sequence[str] | Mapping[str, Sequence[str | Path]] | None,
    languages: Sequence[str] | None,
    text_field: str,
    encoding_errors: str,
) -> LanguageData:
    train_lists = parse_file_lists(train_files, "train files")
    validation_lists = parse_file_lists(validation_files, "validation files") if validation_files else {}
    unknown = [name for name in validation_lists if name not in train_lists]
    if unknown:
        raise DataError(
            f"Validation files for languages {unknown} that have no train files "
            f"(train languages: {list(train_lists)}): add train files or remove them."
        )
    selected = select_languages(languages, list(train_lists), "the train files")
    train = {name: TextFileSource(name, train_lists[name], text_field, encoding_errors) for name in selected}
    validation = {
        name: TextFileSource(name, validation_lists[name], text_field, encoding_errors)
        for name in selected
        if name in validation_lists
    }
    sizes = {name: float(source.num_documents) for name, source in train.items()}
    return LanguageData(selected, train, validation, sizes, origin="files")


def load_from_hub(
    hub_languages: Sequence[str],
    hub_sizes: Mapping[str, float] | None,
    hub_dataset: str,
    hub_data_files: Mapping[str, Mapping[str, Sequence[str | Path]]] | None,
    languages: Sequence[str] | None,
    text_field: str,
) -> LanguageData:
    codes = list(hub_languages)
    check_no_duplicates("the Hub languages", codes)
    selected = select_languages(languages, codes, "the Hub languages")
    hub_sizes = dict(hub_sizes or {})
    unknown_sizes = [name for name in hub_sizes if name not in codes]
    if unknown_sizes:
        raise DataError(f"Sizes given for languages {unknown_sizes} that are not Hub languages {codes}.")
    train, validation = {}, {}
    for code in selected:
        local = (hub_data_files or {}).get(code, {})
        train[code] = HubLanguageSource(
            code, code, "train", hub_dataset, hub_sizes.get(code), local.get("train"), text_field
        )
        if hub_data_files is None or "validation" in local:
            validation[code] = HubLanguageSource(
                code, code, "validation", hub_dataset, None, local.get("validation"), text_field
            )
    sizes = {code: hub_sizes.get(code) for code in selected}
    return LanguageData(selected, train, validation, sizes, origin="hub")


def load_demo(languages: Sequence[str] | None) -> LanguageData:
    selected = select_languages(languages, demo_languages(), "the demo corpus (chatterbot-corpus)")
    train, validation = {}, {}
    for name in selected:
        train[name], validation_source = demo_sources(name)
        if validation_source is not None:
            validation[name] = validation_source
    sizes = {name: float(source.num_documents) for name, source in train.items()}
    return LanguageData(selected, train, validation, sizes, origin="demo")


def load_languages(
    data_dir: str | Path | None = None,
    train_files: Sequence[str] | Mapping[str, Sequence[str | Path]] | None = None,
    validation_files: Sequence[str] | Mapping[str, Sequence[str | Path]] | None = None,
    hub_languages: Sequence[str] | None = None,
    languages: Sequence[str] | None = None,
    hub_sizes: Mapping[str, float] | None = None,
    hub_dataset: str = MC4_DATASET,
    hub_data_files: Mapping[str, Mapping[str, Sequence[str | Path]]] | None = None,
    text_field: str = "text",
    encoding_errors: str = "strict",
) -> LanguageData:
    """Build the train and validation sources of the selected languages from one data origin.

    Args:
        data_dir: folder with one subfolder per language.
        train_files, validation_files: ``["lang=path[,path]"]`` entries or ``{lang: [paths]}``.
        hub_languages: mC4 language codes to stream from `hub_dataset`.
        languages: subset to use, in task order; None uses every available language (sorted
            folder names, file-list order, Hub-list order, or sorted demo languages).
        hub_sizes: |D_i| per Hub language (same unit for all), for static mixing.
        hub_data_files: ``{code: {"train": [paths], "validation": [paths]}}`` local JSON Lines
            files read through the Hub streaming code instead of the Hub.
        text_field: JSON field (or Hub column) holding the text.
        encoding_errors: "strict" (invalid UTF-8 raises a DataError) or "replace".

    With no origin given, the chatterbot-corpus demo corpus is used.
    """
    origins_given = [
        name
        for name, value in (("data_dir", data_dir), ("train_files", train_files), ("hub_languages", hub_languages))
        if value is not None
    ]
    if len(origins_given) > 1:
        raise ValueError(f"Pass only one of data_dir, train_files and hub_languages (got {origins_given}).")
    if validation_files is not None and train_files is None:
        raise ValueError("validation_files needs train_files.")
    if data_dir is not None:
        data = load_from_data_dir(data_dir, languages, text_field, encoding_errors)
    elif train_files is not None:
        data = load_from_files(train_files, validation_files, languages, text_field, encoding_errors)
    elif hub_languages is not None:
        data = load_from_hub(hub_languages, hub_sizes, hub_dataset, hub_data_files, languages, text_field)
    else:
        data = load_demo(languages)
    # Sizes are counted documents for local and demo data, and the sizes given (or None) for the Hub.
    sizes = [
        f"{name}={'unknown' if data.sizes.get(name) is None else format(data.sizes[name], 'g')}"
        for name in data.task_names
    ]
    logger.info("Loaded %d languages (%s), size per language: %s", len(data.task_names), data.origin, ", ".join(sizes))
    return data
