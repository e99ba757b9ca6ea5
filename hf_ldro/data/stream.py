"""Task-stratified stream of packed language-model blocks, resumable and sharded across ranks.

`TaskStratifiedStream` is an infinite `torch.utils.data.IterableDataset`. Every consecutive
``batch_size`` examples form one per-device batch, and each example comes from exactly one language
(task). The task of each example is chosen in one of two modes:

* **stratified shares** (default): a batch contains ``batch_size // N`` examples of every task, and the
  remainder ``r = batch_size % N`` goes to tasks ``(b * r + j) % N`` for ``j < r`` in batch ``b``,
  so the extra examples rotate deterministically over the tasks. When ``batch_size < N`` this means
  each batch covers ``batch_size`` consecutive tasks and the tasks rotate across batches.
* **static sampling** (``sampling_probabilities``): each example's task is drawn independently with
  those probabilities from a generator seeded with ``(seed, rank)``.

Sharding: document ``i`` of a language is read only by rank ``i % world_size`` (before
tokenization), so no document is read by two ranks and every document is read by one. Each rank
builds its own stratified batches from its shards.

A language that runs out starts a new epoch, logged at INFO with the epoch count. Its leftover
tokens carry over into the next epoch's first block, so no token is dropped or read twice within an
epoch. `state_dict` captures every language's epoch, next document index and buffered tokens plus
the task-selection state; a stream restored with `load_state_dict` yields exactly the examples the
uninterrupted stream would have yielded next.

The state reflects the examples pulled out of the stream so far, which matches the examples
trained on only when the stream is read by the main process without lookahead: use
``num_workers=0`` and a plain `DataLoader` (see `TaskStratifiedStream.dataloader`).
"""

from __future__ import annotations

import json
import logging
import math
from itertools import islice
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..weighting.base import check_task_names
from .packing import BlockPacker, check_block_size, count_tokens, encode_documents, eos_token_id
from .sources import DataError, LanguageSource

logger = logging.getLogger(__name__)

STATE_FORMAT_VERSION = 1
STATE_FILE_TEMPLATE = "task_stream_state_rank{rank}.json"


class LanguageCursor:
    """Read position of one language on one rank: epoch, next document index, buffered tokens.

    `epoch` counts completed passes over this rank's shard of the language. `next_document` is the
    index, in source order over all ranks, of the next document to read in the current epoch.
    """

    def __init__(
        self,
        source: LanguageSource,
        tokenizer,
        block_size: int,
        rank: int,
        world_size: int,
        tokenize_batch_size: int,
    ):
        self.source = source
        self.tokenizer = tokenizer
        self.eos_id = eos_token_id(tokenizer)
        self.rank = rank
        self.world_size = world_size
        self.tokenize_batch_size = tokenize_batch_size
        self.packer = BlockPacker(block_size)
        self.read_ahead_characters = 2 * block_size
        self.epoch = 0
        self.next_document = 0
        self.documents_in_epoch = 0
        self._documents: Iterator[tuple[int, str]] | None = None

    def next_block(self) -> list[int]:
        while not self.packer.has_block():
            self._read_documents()
        return self.packer.pop_block()

    def _read_documents(self) -> None:
        """Tokenize the next documents of this rank's shard into the buffer, or start a new epoch.

        Reading stops after `tokenize_batch_size` documents or about two blocks of characters, so
        the buffer (and the saved state) stays a few blocks long. A new epoch starts only when
        more tokens are needed and the shard has no documents left.
        """
        if self._documents is None:
            self._documents = islice(enumerate(self.source.iter_documents()), self.next_document, None)
        texts = []
        characters = 0
        for index, text in self._documents:
            self.next_document = index + 1
            if index % self.world_size != self.rank:
                continue
            texts.append(text)
            characters += len(text)
            if len(texts) == self.tokenize_batch_size or characters >= self.read_ahead_characters:
                break
        if texts:
            self.documents_in_epoch += len(texts)
            self.packer.add(encode_documents(self.tokenizer, texts, self.eos_id))
        else:
            self._start_next_epoch()

    def _start_next_epoch(self) -> None:
        if self.documents_in_epoch == 0:
            raise DataError(
                f"Language {self.source.name!r} has no documents for rank {self.rank} of "
                f"{self.world_size} ({self.source.describe()}): each rank reads documents "
                f"i % world_size == rank, so add documents, use fewer processes, or drop the "
                f"language (leave it out of --languages)."
            )
        self.epoch += 1

        # A tiny language can wrap around hundreds of times, so only epochs 1, 2, 4, 8, ... are
        # logged at INFO; every epoch is logged at DEBUG and counted in `epochs`.
        is_power_of_two = self.epoch & (self.epoch - 1) == 0
        logger.log(
            logging.INFO if is_power_of_two else logging.DEBUG,
            "Language %r finished epoch %d (%d documents on rank %d of %d); re-iterating it.",
            self.source.name,
            self.epoch,
            self.documents_in_epoch,
            self.rank,
            self.world_size,
        )
        self.next_document = 0
        self.documents_in_epoch = 0
        self._documents = None

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "next_document": self.next_document,
            "documents_in_epoch": self.documents_in_epoch,
            "buffer": list(self.packer.buffer),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.next_document = int(state["next_document"])
        self.documents_in_epoch = int(state["documents_in_epoch"])
        self.packer.buffer = [int(token) for token in state["buffer"]]
        self._documents = None


def stratified_batch_tasks(batch_index: int, batch_size: int, num_tasks: int) -> list[int]:
    """Return the task id of every slot of batch `batch_index` under stratified shares.

    Each task gets ``batch_size // num_tasks`` slots; the ``batch_size % num_tasks`` remaining slots
    go to tasks ``(batch_index * r + j) % num_tasks``. Slots are ordered by task id.
    """
    base, remainder = divmod(batch_size, num_tasks)
    counts = [base] * num_tasks
    for j in range(remainder):
        counts[(batch_index * remainder + j) % num_tasks] += 1
    return [task for task, count in enumerate(counts) for _ in range(count)]


def check_probabilities(
    probabilities: Sequence[float] | Mapping[str, float], task_names: Sequence[str]
) -> list[float]:
    """Return sampling probabilities in task order; raise a ValueError unless they form a distribution."""
    if isinstance(probabilities, Mapping):
        missing = [name for name in task_names if name not in probabilities]
        extra = [name for name in probabilities if name not in task_names]
        if missing or extra:
            raise ValueError(
                f"sampling_probabilities must have one entry per task: missing {missing}, "
                f"unknown {extra}; tasks are {list(task_names)}."
            )
        values = [float(probabilities[name]) for name in task_names]
    else:
        values = [float(p) for p in probabilities]
        if len(values) != len(task_names):
            raise ValueError(
                f"sampling_probabilities has {len(values)} entries but there are "
                f"{len(task_names)} tasks {list(task_names)}: pass one per task, in task order."
            )
    if any(not math.isfinite(p) or p < 0 for p in values):
        raise ValueError(f"sampling_probabilities must be finite and >= 0, got {values}.")
    total = sum(values)
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise ValueError(f"sampling_probabilities must sum to 1, got {values} (sum {total}).")
    return [p / total for p in values]


def default_rank_and_world_size() -> tuple[int, int]:
    """Return (rank, world size) of the initialized torch.distributed group, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class TaskStratifiedStream(IterableDataset):
    """Infinite stream of packed blocks, one language per block, with per-batch task composition.

    Args:
        sources: train source per task, as a mapping task name -> source or a sequence of sources
            (task name = ``source.name``).
        tokenizer: a transformers tokenizer with an EOS token.
        block_size: tokens per example.
        batch_size: per-device batch size; each consecutive ``batch_size`` examples form a batch.
        task_names: task order, which defines ``task_ids``; defaults to the order of `sources`.
        seed: seed of the task sampler (static sampling mode).
        sampling_probabilities: per-task probabilities (mapping or sequence in task order); None
            for stratified shares.
        rank, world_size: this process and the number of processes; None takes them from
            torch.distributed when the stream starts (or 0 and 1 without it).
        tokenize_batch_size: documents encoded per tokenizer call.

    Examples are ``{"input_ids": LongTensor[block_size], "labels": LongTensor[block_size],
    "task_ids": int}``; labels are a copy of input_ids (causal LM; the model shifts them).

    Raises:
        DataError: a language has fewer tokens than one block, or fewer documents than ranks.
    """

    def __init__(
        self,
        sources: Mapping[str, LanguageSource] | Sequence[LanguageSource],
        tokenizer,
        block_size: int,
        batch_size: int,
        task_names: Sequence[str] | None = None,
        seed: int = 0,
        sampling_probabilities: Sequence[float] | Mapping[str, float] | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        tokenize_batch_size: int = 64,
    ):
        super().__init__()

        self._sources = self._sources_by_name(sources)
        self.task_names = check_task_names(task_names if task_names is not None else list(self._sources))
        missing = [name for name in self.task_names if name not in self._sources]
        extra = [name for name in self._sources if name not in self.task_names]
        if missing or extra:
            raise ValueError(
                f"task_names and sources must name the same languages: no source for {missing}, "
                f"no task name for {extra}."
            )

        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}.")
        if tokenize_batch_size < 1:
            raise ValueError(f"tokenize_batch_size must be >= 1, got {tokenize_batch_size!r}.")

        self.tokenizer = tokenizer
        self.eos_id = eos_token_id(tokenizer)
        self.block_size = check_block_size(block_size)
        self.batch_size = batch_size
        self.seed = int(seed)
        self.tokenize_batch_size = tokenize_batch_size
        self.sampling_probabilities = (
            check_probabilities(sampling_probabilities, self.task_names)
            if sampling_probabilities is not None
            else None
        )

        if (rank is None) != (world_size is None):
            raise ValueError("Pass both rank and world_size, or neither (taken from torch.distributed).")
        self._rank = rank
        self._world_size = world_size
        if rank is not None:
            self._check_rank(rank, world_size)
            self._check_documents_per_rank()

        self._dataset_sizes = self._measure_sizes()
        self._cursors: list[LanguageCursor] | None = None
        self._rng: np.random.Generator | None = None
        self._examples_yielded = 0

    # ----------------------------------------------------------------------------- construction

    @staticmethod
    def _sources_by_name(sources) -> dict[str, LanguageSource]:
        if isinstance(sources, Mapping):
            for name, source in sources.items():
                if source.name != name:
                    raise ValueError(
                        f"Source {source!r} is registered under task {name!r} but is named "
                        f"{source.name!r}: use the same name."
                    )
            return dict(sources)
        sources = list(sources)
        names = check_task_names([source.name for source in sources])
        return dict(zip(names, sources))

    def _measure_sizes(self) -> dict[str, float | None]:
        """Count the tokens of each local language and check that each fills at least one block."""
        sizes: dict[str, float | None] = {}
        for name in self.task_names:
            source = self._sources[name]
            if source.size is not None:
                sizes[name] = float(source.size)
                continue
            if source.num_documents is None:
                sizes[name] = None
                continue
            tokens = count_tokens(self.tokenizer, source.iter_documents(), self.eos_id)
            if tokens < self.block_size:
                raise DataError(
                    f"Language {name!r} has {tokens} tokens ({source.num_documents} documents, "
                    f"{source.describe()}), fewer than one block of block_size={self.block_size}. "
                    f"Use a smaller --block_size, add data for the language, or drop it (leave "
                    f"it out of --languages)."
                )
            sizes[name] = float(tokens)
        return sizes

    @staticmethod
    def _check_rank(rank: int, world_size: int) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"Invalid rank {rank} for world_size {world_size}: need 0 <= rank < world_size.")

    def _check_documents_per_rank(self) -> None:
        """Raise a DataError if a language with a known document count has none for this rank."""
        for name in self.task_names:
            documents = self._sources[name].num_documents
            if documents is not None and documents <= self._rank:
                raise DataError(
                    f"Language {name!r} has {documents} documents, so rank {self._rank} of "
                    f"{self._world_size} gets none (document i goes to rank i % world_size): "
                    f"add documents, use fewer processes, or drop the language (leave it out of "
                    f"--languages)."
                )

    def set_distributed(self, rank: int, world_size: int) -> None:
        """Set this process's rank and the number of processes. Call it before reading the stream."""
        self._check_rank(rank, world_size)
        if self._examples_yielded:
            raise RuntimeError(
                f"set_distributed called after {self._examples_yielded} examples were read: "
                f"set rank and world_size before iterating."
            )
        self._rank, self._world_size = rank, world_size
        self._check_documents_per_rank()
        self._cursors = None
        self._rng = None

    def _ensure_started(self) -> None:
        """Resolve rank and world size, then create the per-language cursors and the sampler."""
        if self._cursors is not None:
            return
        if self._rank is None:
            self._rank, self._world_size = default_rank_and_world_size()
            self._check_documents_per_rank()
        self._cursors = [
            LanguageCursor(
                self._sources[name],
                self.tokenizer,
                self.block_size,
                self._rank,
                self._world_size,
                self.tokenize_batch_size,
            )
            for name in self.task_names
        ]
        self._rng = np.random.default_rng([self.seed, self._rank])

    # ------------------------------------------------------------------------------- properties

    @property
    def rank(self) -> int:
        self._ensure_started()
        return self._rank

    @property
    def world_size(self) -> int:
        self._ensure_started()
        return self._world_size

    @property
    def dataset_sizes(self) -> dict[str, float | None]:
        """|D_i| per task: tokens counted over the whole train split (all ranks, one EOS per
        document), or the size given to a streamed source. None for a streamed source without one."""
        return dict(self._dataset_sizes)

    @property
    def epochs(self) -> dict[str, int]:
        """Completed epochs per language on this rank."""
        if self._cursors is None:
            return {name: 0 for name in self.task_names}
        return {name: cursor.epoch for name, cursor in zip(self.task_names, self._cursors)}

    @property
    def examples_yielded(self) -> int:
        """Examples pulled out of the stream on this rank since the start (restored by load_state_dict)."""
        return self._examples_yielded

    def set_sampling_probabilities(self, probabilities: Sequence[float] | Mapping[str, float] | None) -> None:
        """Switch to static sampling with new probabilities, or back to stratified shares with None."""
        self.sampling_probabilities = (
            check_probabilities(probabilities, self.task_names) if probabilities is not None else None
        )

    # -------------------------------------------------------------------------------- iteration

    def _next_task_id(self) -> int:
        if self.sampling_probabilities is not None:
            return int(self._rng.choice(len(self.task_names), p=self.sampling_probabilities))
        batch_index, slot = divmod(self._examples_yielded, self.batch_size)
        return stratified_batch_tasks(batch_index, self.batch_size, len(self.task_names))[slot]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if get_worker_info() is not None:
            raise RuntimeError(
                "TaskStratifiedStream must be read by the main process (DataLoader num_workers=0): "
                "its position is saved in checkpoints and worker copies would not update it."
            )
        self._ensure_started()
        while True:
            task_id = self._next_task_id()
            block = self._cursors[task_id].next_block()
            self._examples_yielded += 1
            input_ids = torch.tensor(block, dtype=torch.long)
            yield {"input_ids": input_ids, "labels": input_ids.clone(), "task_ids": task_id}

    def dataloader(self, collate_fn=None, pin_memory: bool = False) -> DataLoader:
        """Return a DataLoader that reads this stream in the main process, ``batch_size`` per batch.

        Pass it to training as is. Wrapping it with ``accelerate`` (``Accelerator.prepare``) would
        re-shard the already sharded stream across processes and read one batch ahead of training.
        """
        from transformers import default_data_collator

        return DataLoader(
            self,
            batch_size=self.batch_size,
            num_workers=0,
            collate_fn=collate_fn or default_data_collator,
            pin_memory=pin_memory,
        )

    # ---------------------------------------------------------------------------- checkpointing

    def state_dict(self) -> dict[str, Any]:
        """Return the exact stream position on this rank (JSON-serializable)."""
        self._ensure_started()
        return {
            "format_version": STATE_FORMAT_VERSION,
            "task_names": list(self.task_names),
            "block_size": self.block_size,
            "batch_size": self.batch_size,
            "rank": self._rank,
            "world_size": self._world_size,
            "examples_yielded": self._examples_yielded,
            "sampling_probabilities": self.sampling_probabilities,
            "rng": self._rng.bit_generator.state,
            "languages": {
                name: cursor.state_dict() for name, cursor in zip(self.task_names, self._cursors)
            },
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a position saved by `state_dict` on the same rank with the same configuration.

        The sampling probabilities in effect when the state was saved are restored too.
        """
        self._ensure_started()
        expected = {
            "format_version": STATE_FORMAT_VERSION,
            "task_names": list(self.task_names),
            "block_size": self.block_size,
            "batch_size": self.batch_size,
            "rank": self._rank,
            "world_size": self._world_size,
        }
        for key, value in expected.items():
            if state.get(key) != value:
                raise ValueError(
                    f"Cannot restore the stream state: {key} is {state.get(key)!r} in the saved "
                    f"state but {value!r} in this stream. Resume with the same languages, "
                    f"block_size, per-device batch size and number of processes (each rank loads "
                    f"its own state)."
                )
        for name, cursor in zip(self.task_names, self._cursors):
            cursor.load_state_dict(state["languages"][name])
        self._examples_yielded = int(state["examples_yielded"])
        self.sampling_probabilities = state["sampling_probabilities"]
        self._rng.bit_generator.state = state["rng"]

    def save_state(self, folder: str | Path) -> Path:
        """Write `state_dict` to ``folder/task_stream_state_rank{rank}.json``; return the path."""
        path = Path(folder) / STATE_FILE_TEMPLATE.format(rank=self.rank)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.state_dict()), encoding="utf-8")
        return path

    def load_state(self, folder: str | Path) -> bool:
        """Load this rank's state file from `folder` if present; return whether one was loaded."""
        path = Path(folder) / STATE_FILE_TEMPLATE.format(rank=self.rank)
        if not path.is_file():
            return False
        self.load_state_dict(json.loads(path.read_text(encoding="utf-8")))
        logger.info("Restored the task stream position from %s.", path)
        return True
