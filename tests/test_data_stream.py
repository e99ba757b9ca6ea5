"""TaskStratifiedStream on real UD languages with a byte-level tokenizer and small blocks."""

import collections
import itertools
import json
import logging
import math
from pathlib import Path

import pytest

from hf_ldro.data import TaskStratifiedStream, byte_level_tokenizer, load_languages
from hf_ldro.data import stream as stream_module

UD_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "multilingual" / "ud"
LANGUAGES = ["eng_Latn", "yor_Latn", "amh_Ethi", "jpn_Jpan"]
BLOCK_SIZE = 32

pytestmark = pytest.mark.skipif(
    not UD_DIR.is_dir(), reason=f"UD multilingual data not found at {UD_DIR}"
)


@pytest.fixture(scope="module")
def tokenizer():
    return byte_level_tokenizer()


@pytest.fixture(scope="module")
def ud_data():
    return load_languages(data_dir=UD_DIR, languages=LANGUAGES)


def make_stream(data, tokenizer, batch_size=6, **kwargs):
    return TaskStratifiedStream(
        data.train_sources,
        tokenizer,
        block_size=kwargs.pop("block_size", BLOCK_SIZE),
        batch_size=batch_size,
        task_names=data.task_names,
        **kwargs,
    )


def take(stream, count):
    return list(itertools.islice(iter(stream), count))


def expected_token_stream(source, tokenizer, rank=0, world_size=1):
    """The language's packed token sequence on one rank, built independently of the stream."""
    eos = tokenizer.eos_token_id
    while True:
        for index, text in enumerate(source.iter_documents()):
            if index % world_size == rank:
                yield from tokenizer(text, add_special_tokens=False)["input_ids"]
                yield eos


def test_examples_have_expected_fields(ud_data, tokenizer):
    example = take(make_stream(ud_data, tokenizer), 1)[0]
    assert set(example) == {"input_ids", "labels", "task_ids"}
    assert example["input_ids"].shape == (BLOCK_SIZE,)
    assert example["labels"].tolist() == example["input_ids"].tolist()
    assert example["labels"].data_ptr() != example["input_ids"].data_ptr()


def test_stratified_batches_share_evenly(ud_data, tokenizer):
    batch_size, num_tasks = 6, len(LANGUAGES)
    examples = take(make_stream(ud_data, tokenizer, batch_size=batch_size), batch_size * 8)
    totals = collections.Counter()
    for start in range(0, len(examples), batch_size):
        counts = collections.Counter(e["task_ids"] for e in examples[start : start + batch_size])
        for task in range(num_tasks):
            assert counts[task] in (batch_size // num_tasks, batch_size // num_tasks + 1)
        totals.update(counts)
    # 8 batches with remainder 2 over 4 tasks: every task received the extra slot 4 times.
    assert set(totals.values()) == {8 * (batch_size // num_tasks) + 4}


def test_stratified_rotates_when_batch_smaller_than_tasks(ud_data, tokenizer):
    batch_size = 3
    examples = take(make_stream(ud_data, tokenizer, batch_size=batch_size), batch_size * 4)
    batches = [
        [e["task_ids"] for e in examples[start : start + batch_size]]
        for start in range(0, len(examples), batch_size)
    ]
    for batch in batches:
        assert len(set(batch)) == batch_size
    totals = collections.Counter(task for batch in batches for task in batch)
    assert set(totals.values()) == {3}


def test_static_sampling_matches_probabilities(ud_data, tokenizer):
    probabilities = [0.5, 0.3, 0.15, 0.05]
    draws = 3000
    stream = make_stream(ud_data, tokenizer, block_size=8, sampling_probabilities=probabilities, seed=3)
    counts = collections.Counter(e["task_ids"] for e in take(stream, draws))
    for task, p in enumerate(probabilities):
        tolerance = 4 * math.sqrt(p * (1 - p) / draws)
        assert abs(counts[task] / draws - p) < tolerance, (task, counts[task] / draws, p)


def test_static_sampling_is_seeded(ud_data, tokenizer):
    def task_sequence(seed):
        stream = make_stream(ud_data, tokenizer, sampling_probabilities=[0.25] * 4, seed=seed)
        return [e["task_ids"] for e in take(stream, 40)]

    assert task_sequence(1) == task_sequence(1)
    assert task_sequence(1) != task_sequence(2)


def test_blocks_come_from_one_language(ud_data, tokenizer):
    stream = make_stream(ud_data, tokenizer)
    per_task = collections.defaultdict(list)
    for example in take(stream, 240):
        per_task[example["task_ids"]].append(example["input_ids"].tolist())
    for task, name in enumerate(ud_data.task_names):
        expected = expected_token_stream(ud_data.train_sources[name], tokenizer)
        for block in per_task[task]:
            assert block == list(itertools.islice(expected, BLOCK_SIZE)), name


def test_exhausted_language_is_reiterated(tokenizer, caplog):
    data = load_languages(data_dir=UD_DIR, languages=["yor_Latn", "ben_Beng"])
    stream = make_stream(data, tokenizer, batch_size=2, block_size=64)
    ben = data.train_sources["ben_Beng"]
    expected = expected_token_stream(ben, tokenizer)
    ben_tokens_per_epoch = stream.dataset_sizes["ben_Beng"]
    epochs_wanted = 3
    blocks_needed = math.ceil(epochs_wanted * ben_tokens_per_epoch / 64) + 1
    with caplog.at_level(logging.DEBUG, logger="hf_ldro.data.stream"):
        examples = take(stream, 2 * blocks_needed)
    ben_blocks = [e["input_ids"].tolist() for e in examples if e["task_ids"] == 1]
    for block in ben_blocks:
        assert block == list(itertools.islice(expected, 64))
    assert stream.epochs["ben_Beng"] == epochs_wanted
    records = [r for r in caplog.records if "ben_Beng" in r.getMessage()]
    assert len(records) == epochs_wanted
    assert "finished epoch 3 (2 documents" in records[-1].getMessage()
    assert [r.levelno for r in records] == [logging.INFO, logging.INFO, logging.DEBUG]


def test_two_ranks_read_disjoint_documents(ud_data, tokenizer, monkeypatch):
    encoded_by_rank = collections.defaultdict(list)
    current_rank = {}
    real_encode = stream_module.encode_documents

    def recording_encode(tok, texts, eos_id):
        encoded_by_rank[current_rank["rank"]].extend(texts)
        return real_encode(tok, texts, eos_id)

    monkeypatch.setattr(stream_module, "encode_documents", recording_encode)
    data = load_languages(data_dir=UD_DIR, languages=["yor_Latn", "amh_Ethi"])
    for rank in (0, 1):
        current_rank["rank"] = rank
        stream = make_stream(data, tokenizer, batch_size=2, block_size=64, rank=rank, world_size=2)
        iterator = iter(stream)
        while min(stream.epochs.values()) < 1:
            next(iterator)
    # Stop at the end of the first epoch: later epochs re-read the same shard.
    for rank in (0, 1):
        encoded_by_rank[rank] = list(dict.fromkeys(encoded_by_rank[rank]))
    rank0, rank1 = set(encoded_by_rank[0]), set(encoded_by_rank[1])
    everything = {text for name in data.task_names for text in data.train_sources[name].iter_documents()}
    assert not rank0 & rank1
    assert rank0 | rank1 == everything


def test_rank_streams_follow_document_shards(ud_data, tokenizer):
    for rank in (0, 1):
        stream = make_stream(ud_data, tokenizer, rank=rank, world_size=2)
        per_task = collections.defaultdict(list)
        for example in take(stream, 60):
            per_task[example["task_ids"]].append(example["input_ids"].tolist())
        for task, name in enumerate(ud_data.task_names):
            expected = expected_token_stream(ud_data.train_sources[name], tokenizer, rank, 2)
            for block in per_task[task]:
                assert block == list(itertools.islice(expected, BLOCK_SIZE)), (rank, name)


@pytest.mark.parametrize("probabilities", [None, [0.4, 0.3, 0.2, 0.1]])
def test_state_dict_restores_exact_position(ud_data, tokenizer, probabilities):
    def build():
        return make_stream(ud_data, tokenizer, batch_size=5, sampling_probabilities=probabilities, seed=7)

    original = build()
    iterator = iter(original)
    for _ in range(1234):
        next(iterator)
    state = json.loads(json.dumps(original.state_dict()))
    continuation = [next(iterator) for _ in range(300)]

    restored = build()
    restored.load_state_dict(state)
    replay = take(restored, 300)
    assert [e["task_ids"] for e in replay] == [e["task_ids"] for e in continuation]
    assert [e["input_ids"].tolist() for e in replay] == [e["input_ids"].tolist() for e in continuation]
    assert restored.epochs == original.epochs


def test_state_files_round_trip(ud_data, tokenizer, tmp_path):
    original = make_stream(ud_data, tokenizer, rank=1, world_size=2)
    iterator = iter(original)
    for _ in range(17):
        next(iterator)
    path = original.save_state(tmp_path)
    expected = [next(iterator)["input_ids"].tolist() for _ in range(10)]
    restored = make_stream(ud_data, tokenizer, rank=1, world_size=2)
    assert path.name == "task_stream_state_rank1.json"
    assert restored.load_state(tmp_path)
    assert [e["input_ids"].tolist() for e in take(restored, 10)] == expected


def test_state_from_other_configuration_rejected(ud_data, tokenizer):
    state = make_stream(ud_data, tokenizer, batch_size=6).state_dict()
    other = make_stream(ud_data, tokenizer, batch_size=4)
    with pytest.raises(ValueError, match="batch_size is 6 in the saved state but 4"):
        other.load_state_dict(state)


def test_set_distributed_after_reading_rejected(ud_data, tokenizer):
    stream = make_stream(ud_data, tokenizer)
    take(stream, 1)
    with pytest.raises(RuntimeError, match="before iterating"):
        stream.set_distributed(1, 2)


def test_dataloader_batches_in_order(ud_data, tokenizer):
    stream = make_stream(ud_data, tokenizer, batch_size=4)
    batch = next(iter(stream.dataloader()))
    assert batch["input_ids"].shape == (4, BLOCK_SIZE)
    assert batch["task_ids"].tolist() == [0, 1, 2, 3]


def test_worker_processes_rejected(ud_data, tokenizer):
    from torch.utils.data import DataLoader

    stream = make_stream(ud_data, tokenizer, batch_size=2)
    loader = DataLoader(stream, batch_size=2, num_workers=1)
    with pytest.raises(RuntimeError, match="num_workers=0"):
        next(iter(loader))


def test_dataset_sizes_count_tokens(ud_data, tokenizer):
    stream = make_stream(ud_data, tokenizer)
    source = ud_data.train_sources["yor_Latn"]
    expected = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for t in source.iter_documents())
    assert stream.dataset_sizes["yor_Latn"] == expected
