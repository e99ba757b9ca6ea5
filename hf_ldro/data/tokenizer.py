"""Tokenizers for multilingual LM training: pretrained, trained SentencePiece unigram, or bytes.

* `load_pretrained_tokenizer(name_or_path)`: ``AutoTokenizer.from_pretrained``.
* `train_sentencepiece_tokenizer(...)`: trains a SentencePiece unigram model offline on a
  temperature-sampled mix of the training languages and wraps it as a
  `PreTrainedTokenizerFast`, saved to a folder that ``AutoTokenizer.from_pretrained`` loads back.
* `byte_level_tokenizer()`: ``ByT5Tokenizer()``, which needs no files (256 bytes + 3 specials).

The trained tokenizer is built directly from the SentencePiece vocabulary and scores as a
`tokenizers` Unigram model (``T5TokenizerFast(vocab_file=...)`` ignores the file in transformers 5,
and reading the SentencePiece model proto needs protobuf). Training text is normalized here with
NFKC and whitespace collapsing, and SentencePiece trains with its ``identity`` rule, so the
wrapper's normalizer (the same NFKC and whitespace steps) gives the pieces it was trained on.
Special tokens follow T5: ``<pad>``=0, ``</s>``=1, ``<unk>``=2, no BOS; ``byte_fallback`` adds the
256 ``<0x..>`` byte pieces so characters outside the coverage are encoded as bytes, not ``<unk>``.
"""

from __future__ import annotations

import logging
import math
import re
import tempfile
import unicodedata
from pathlib import Path
from typing import Mapping

import numpy as np

from .sources import LanguageSource

logger = logging.getLogger(__name__)

BYTE_LEVEL = "byte-level"
SPIECE_MODEL_FILE = "spiece.model"
PAD_TOKEN, EOS_TOKEN, UNK_TOKEN = "<pad>", "</s>", "<unk>"
METASPACE = "\u2581"
_WHITESPACE = re.compile(r"\s+")


def load_pretrained_tokenizer(name_or_path: str, **kwargs):
    """Load a tokenizer by Hub id or local folder with ``AutoTokenizer.from_pretrained``."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name_or_path, **kwargs)


def byte_level_tokenizer():
    """Return ``ByT5Tokenizer()``: UTF-8 bytes as tokens, no vocabulary file needed."""
    from transformers import ByT5Tokenizer

    return ByT5Tokenizer()


def normalize_text(text: str) -> str:
    """NFKC-normalize, collapse whitespace runs to one space and strip (the tokenizer's normalizer)."""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip()


def temperature_probabilities(sizes: Mapping[str, float], alpha: float) -> dict[str, float]:
    """Return p_i proportional to size_i ** alpha (alpha=1 proportional, 0 uniform)."""
    if not sizes:
        raise ValueError("temperature_probabilities needs at least one language.")
    if not math.isfinite(alpha) or alpha < 0:
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}.")
    weights = {name: float(size) ** alpha for name, size in sizes.items()}
    total = sum(weights.values())
    return {name: weight / total for name, weight in weights.items()}


def sample_training_text(
    sources: Mapping[str, LanguageSource],
    alpha: float = 0.3,
    max_documents_per_language: int = 10_000,
    total_characters: int | None = None,
    seed: int = 0,
) -> list[str]:
    """Return a temperature-sampled mix of normalized text lines from the languages in `sources`.

    The first `max_documents_per_language` documents of each language are read. Language i gets a
    share p_i of `total_characters` (default: all characters read), with p_i proportional to its
    character count ** alpha. The share is filled by cycling through the language's documents in a
    seeded random order, so low-resource languages are repeated and high-resource ones subsampled.
    """
    documents: dict[str, list[str]] = {}
    for name, source in sources.items():
        texts = []
        for text in source.iter_documents():
            text = normalize_text(text)
            if text:
                texts.append(text)
            if len(texts) == max_documents_per_language:
                break
        if texts:
            documents[name] = texts
    if not documents:
        raise ValueError("No text to train the tokenizer on: every language is empty.")
    characters = {name: sum(len(t) for t in texts) for name, texts in documents.items()}
    probabilities = temperature_probabilities(characters, alpha)
    budget = total_characters if total_characters is not None else sum(characters.values())
    rng = np.random.default_rng(seed)
    lines: list[str] = []
    for name, texts in documents.items():
        target = probabilities[name] * budget
        order = rng.permutation(len(texts))
        characters_taken = 0
        position = 0
        while characters_taken < target:
            text = texts[order[position % len(texts)]]
            lines.append(text)
            characters_taken += len(text)
            position += 1
        logger.info(
            "Tokenizer training mix: %r p=%.3f, %d characters from %d documents read.",
            name,
            probabilities[name],
            characters_taken,
            len(texts),
        )
    rng.shuffle(lines)
    return lines


def wrap_sentencepiece_model(model_file: str | Path):
    """Build a `PreTrainedTokenizerFast` equivalent to a trained SentencePiece unigram model."""
    import sentencepiece as spm
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import Unigram
    from transformers import PreTrainedTokenizerFast

    processor = spm.SentencePieceProcessor(model_file=str(model_file))
    vocab = [(processor.id_to_piece(i), processor.get_score(i)) for i in range(processor.get_piece_size())]
    byte_fallback = processor.piece_to_id("<0x00>") != processor.unk_id()
    backend = Tokenizer(Unigram(vocab, unk_id=processor.unk_id(), byte_fallback=byte_fallback))
    backend.normalizer = normalizers.Sequence(
        [normalizers.NFKC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip()]
    )
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always")
    backend.decoder = decoders.Sequence(
        [
            decoders.Replace(METASPACE, " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(content=" ", left=1, right=0),
        ]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN, unk_token=UNK_TOKEN
    )


def train_sentencepiece_tokenizer(
    sources: Mapping[str, LanguageSource],
    output_dir: str | Path,
    vocab_size: int = 8000,
    alpha: float = 0.3,
    character_coverage: float = 0.9995,
    byte_fallback: bool = True,
    max_documents_per_language: int = 10_000,
    seed: int = 0,
    num_threads: int = 1,
):
    """Train a SentencePiece unigram tokenizer on the training languages and save it to `output_dir`.

    `vocab_size` is an upper bound (``hard_vocab_limit=False``), so small corpora train a smaller
    vocabulary instead of failing. It must still exceed the number of distinct characters kept by
    `character_coverage` (plus 259 byte and special pieces with `byte_fallback`). `output_dir`
    receives ``tokenizer.json``, its config and ``spiece.model``; load it back with
    ``AutoTokenizer.from_pretrained(output_dir)``. Returns the wrapped tokenizer.
    """
    import sentencepiece as spm

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    lines = sample_training_text(sources, alpha, max_documents_per_language, seed=seed)
    with tempfile.TemporaryDirectory() as workdir:
        prefix = Path(workdir) / "spiece"
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(lines),
                model_prefix=str(prefix),
                model_type="unigram",
                vocab_size=vocab_size,
                hard_vocab_limit=False,
                character_coverage=character_coverage,
                byte_fallback=byte_fallback,
                normalization_rule_name="identity",
                pad_id=0,
                eos_id=1,
                unk_id=2,
                bos_id=-1,
                max_sentence_length=1 << 20,
                shuffle_input_sentence=True,
                seed_sentencepiece_size=1_000_000,
                num_threads=num_threads,
                minloglevel=2,
            )
        except RuntimeError as error:
            message = str(error)
            if "required_chars" in message or "vocab_size" in message:
                raise ValueError(
                    f"SentencePiece training failed for vocab_size={vocab_size}: {message} "
                    f"Raise vocab_size above the number of characters it reports, or lower "
                    f"character_coverage (characters left out are encoded as bytes with "
                    f"byte_fallback)."
                ) from None
            raise
        model_file = output_dir / SPIECE_MODEL_FILE
        model_file.write_bytes(prefix.with_suffix(".model").read_bytes())
    tokenizer = wrap_sentencepiece_model(model_file)
    tokenizer.save_pretrained(output_dir)
    logger.info(
        "Trained a SentencePiece unigram tokenizer with %d pieces on %d languages; saved to %s.",
        len(tokenizer),
        len(sources),
        output_dir,
    )
    return tokenizer


def build_tokenizer(
    tokenizer_name: str | None,
    train_sources: Mapping[str, LanguageSource] | None = None,
    output_dir: str | Path | None = None,
    vocab_size: int = 8000,
    alpha: float = 0.3,
    seed: int = 0,
):
    """Return the tokenizer that `tokenizer_name` selects.

    `tokenizer_name`: ``"byte-level"`` for `byte_level_tokenizer`; a Hub id or folder for
    `load_pretrained_tokenizer`; None to train a SentencePiece tokenizer on `train_sources`
    (saved to `output_dir`, with `vocab_size`, `alpha` and `seed`).
    """
    if tokenizer_name == BYTE_LEVEL:
        return byte_level_tokenizer()
    if tokenizer_name is not None:
        return load_pretrained_tokenizer(tokenizer_name)
    if not train_sources or output_dir is None:
        raise ValueError(
            "Training a tokenizer needs train_sources and output_dir; or pass tokenizer_name "
            f"(a Hub id or folder, or {BYTE_LEVEL!r})."
        )
    return train_sentencepiece_tokenizer(train_sources, output_dir, vocab_size, alpha, seed=seed)

