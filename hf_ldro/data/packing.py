"""Tokenize documents and pack one language's tokens into fixed-size blocks.

Each document is encoded without special tokens and followed by the tokenizer's EOS token, then the
token sequence is cut into ``block_size`` blocks. A block may span several documents of the same
language; packing is per language, so no block mixes languages.
"""

from __future__ import annotations

import logging
from typing import Iterable, Sequence

logger = logging.getLogger(__name__)


def eos_token_id(tokenizer) -> int:
    """Return the tokenizer's EOS id, the separator between packed documents."""
    token_id = getattr(tokenizer, "eos_token_id", None)
    if token_id is None:
        raise ValueError(
            f"Tokenizer {type(tokenizer).__name__} has no EOS token, which separates packed "
            f"documents: set one (tokenizer.eos_token = ...) or use a tokenizer that has one."
        )
    return int(token_id)


def check_block_size(block_size: int) -> int:
    """Raise a ValueError unless `block_size` is an integer >= 2 (inputs and shifted labels)."""
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 2:
        raise ValueError(f"block_size must be an integer >= 2, got {block_size!r}.")
    return block_size


def encode_documents(tokenizer, texts: Sequence[str], eos_id: int) -> list[list[int]]:
    """Batch-encode `texts` and append `eos_id` to each document's token ids."""
    if not texts:
        return []
    # verbose=False silences the "longer than model_max_length" warning: documents are cut into
    # blocks afterwards, so their full length is intended.
    encoded = tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
    return [ids + [eos_id] for ids in encoded]


def count_tokens(tokenizer, documents: Iterable[str], eos_id: int, batch_size: int = 256) -> int:
    """Count the tokens of `documents` as packing produces them (including one EOS per document)."""
    total = 0
    batch: list[str] = []
    for text in documents:
        batch.append(text)
        if len(batch) == batch_size:
            total += sum(len(ids) for ids in encode_documents(tokenizer, batch, eos_id))
            batch = []
    total += sum(len(ids) for ids in encode_documents(tokenizer, batch, eos_id))
    return total


class BlockPacker:
    """Token buffer of one language: documents go in, ``block_size`` blocks come out.

    Tokens left over after the last full block stay in `buffer` (they start the next block, which
    is how a language that is re-iterated continues across epochs without losing tokens).
    """

    def __init__(self, block_size: int, buffer: Sequence[int] = ()):
        self.block_size = check_block_size(block_size)
        self.buffer: list[int] = list(buffer)

    def add(self, documents_token_ids: Iterable[list[int]]) -> None:
        for ids in documents_token_ids:
            self.buffer.extend(ids)

    def has_block(self) -> bool:
        return len(self.buffer) >= self.block_size

    def pop_block(self) -> list[int]:
        if not self.has_block():
            raise RuntimeError(
                f"pop_block called with {len(self.buffer)} buffered tokens, fewer than "
                f"block_size={self.block_size}: add documents first."
            )
        block = self.buffer[: self.block_size]
        del self.buffer[: self.block_size]
        return block


def pack_documents(
    tokenizer, documents: Iterable[str], block_size: int, eos_id: int, batch_size: int = 256
) -> tuple[list[list[int]], list[int]]:
    """Pack all `documents` into full blocks; return (blocks, leftover tokens shorter than a block)."""
    packer = BlockPacker(block_size)
    blocks: list[list[int]] = []
    batch: list[str] = []

    def flush() -> None:
        packer.add(encode_documents(tokenizer, batch, eos_id))
        batch.clear()
        while packer.has_block():
            blocks.append(packer.pop_block())

    for text in documents:
        batch.append(text)
        if len(batch) == batch_size:
            flush()
    flush()
    return blocks, packer.buffer
