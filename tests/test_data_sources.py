"""Language sources: local folders and file lists, the Hub code path on local files, the demo corpus."""

import gzip
import json
from pathlib import Path

import pytest

from hf_ldro.data import (
    HubLanguageSource,
    TaskStratifiedStream,
    TextFileSource,
    build_eval_datasets,
    byte_level_tokenizer,
    demo_languages,
    load_languages,
)
from hf_ldro.data.demo_corpus import read_demo_documents, split_train_validation

UD_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "multilingual" / "ud"
needs_ud = pytest.mark.skipif(not UD_DIR.is_dir(), reason=f"UD multilingual data not found at {UD_DIR}")


def write_jsonl(path, texts, field="text"):
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as handle:
        for text in texts:
            handle.write(json.dumps({field: text, "url": "https://example.org"}) + "\n")
    return path


@needs_ud
def test_data_dir_loads_selected_languages():
    data = load_languages(data_dir=UD_DIR, languages=["jpn_Jpan", "yor_Latn"])
    assert data.task_names == ["jpn_Jpan", "yor_Latn"]
    assert data.sizes["yor_Latn"] == sum(1 for _ in data.train_sources["yor_Latn"].iter_documents())
    assert set(data.validation_sources) == {"jpn_Jpan", "yor_Latn"}
    assert data.origin == "data_dir"


@needs_ud
def test_data_dir_default_takes_all_languages():
    data = load_languages(data_dir=UD_DIR)
    folders = sorted(p.name for p in UD_DIR.iterdir() if p.is_dir())
    assert data.task_names == folders


def test_text_and_gzip_files(tmp_path):
    txt = tmp_path / "a.txt"
    txt.write_text("first doc\n\n  \nsecond doc\n", encoding="utf-8")
    gz = write_jsonl(tmp_path / "b.jsonl.gz", ["third", ""])
    source = TextFileSource("xx", [txt, gz])
    assert list(source.iter_documents()) == ["first doc", "second doc", "third"]
    assert source.num_documents == 3


def test_file_lists_with_several_files(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", ["a1", "a2"])
    b = write_jsonl(tmp_path / "b.jsonl", ["b1"])
    v = write_jsonl(tmp_path / "v.jsonl", ["v1"])
    data = load_languages(train_files=[f"aa={a},{b}", f"bb={b}"], validation_files=[f"aa={v}"])
    assert data.task_names == ["aa", "bb"]
    assert list(data.train_sources["aa"].iter_documents()) == ["a1", "a2", "b1"]
    assert list(data.validation_sources) == ["aa"]
    assert data.sizes == {"aa": 3.0, "bb": 1.0}


def test_demo_corpus_is_default():
    data = load_languages()
    assert data.origin == "demo"
    assert data.task_names == demo_languages()
    assert len(data.task_names) >= 20
    assert "english" in data.task_names


def test_demo_split_is_deterministic_and_disjoint():
    documents = read_demo_documents("english")
    train, validation = split_train_validation(documents)
    assert split_train_validation(documents) == (train, validation)
    assert len(train) + len(validation) == len(documents)
    assert len(validation) == len(documents) // 10


def test_demo_small_language_keeps_validation():
    data = load_languages(languages=["thai", "english"])
    assert data.sizes["thai"] >= 1
    assert data.validation_sources["thai"].num_documents >= 1


def test_demo_stream_and_eval_sets():
    tokenizer = byte_level_tokenizer()
    data = load_languages(languages=["yoruba", "english", "japanese"])
    stream = TaskStratifiedStream(data.train_sources, tokenizer, 16, 3, data.task_names)
    batch = next(iter(stream.dataloader()))
    assert batch["task_ids"].tolist() == [0, 1, 2]
    eval_sets = build_eval_datasets(data.validation_sources, tokenizer, 16, data.task_names, 4)
    assert {name: len(ds) for name, ds in eval_sets.items()} == {"yoruba": 4, "english": 4, "japanese": 4}
    assert eval_sets["japanese"][0]["task_ids"] == 2


def test_eval_set_pads_last_block(tmp_path):
    tokenizer = byte_level_tokenizer()
    source = TextFileSource("xx", [write_jsonl(tmp_path / "v.jsonl", ["abcdefghij"])])
    dataset = build_eval_datasets({"xx": source}, tokenizer, 8, ["yy", "xx"])["xx"]
    assert len(dataset) == 2
    assert dataset[1]["labels"][3:] == [-100] * 5
    assert dataset[1]["input_ids"][3:] == [tokenizer.pad_token_id] * 5
    assert dataset[1]["labels"][2] == tokenizer.eos_token_id
    assert dataset[0]["task_ids"] == 1


def test_hub_source_streams_local_files(tmp_path):
    texts = [f"Ọ̀rọ̀ {i} " * 5 for i in range(7)]
    path = write_jsonl(tmp_path / "c4-yo.json.gz", texts)
    source = HubLanguageSource("yo", "yo", data_files=[path], size=1234)
    assert list(source.iter_documents()) == texts
    assert source.num_documents is None
    assert source.size == 1234


def test_hub_languages_through_load_languages(tmp_path):
    files = {}
    for code in ("yo", "am"):
        files[code] = {
            "train": [write_jsonl(tmp_path / code / "train.json", [f"{code} train {i} " * 8 for i in range(6)])],
            "validation": [write_jsonl(tmp_path / code / "validation.json", [f"{code} valid"])],
        }
    data = load_languages(hub_languages=["yo", "am"], hub_sizes={"yo": 10, "am": 30}, hub_data_files=files)
    assert data.origin == "hub"
    assert data.sizes == {"yo": 10, "am": 30}
    tokenizer = byte_level_tokenizer()
    stream = TaskStratifiedStream(data.train_sources, tokenizer, 16, 2, data.task_names, rank=1, world_size=2)
    assert stream.dataset_sizes == {"yo": 10.0, "am": 30.0}
    examples = [example for _, example in zip(range(40), stream)]
    assert {e["task_ids"] for e in examples} == {0, 1}
    assert stream.epochs["yo"] >= 1
    eval_sets = build_eval_datasets(data.validation_sources, tokenizer, 16, data.task_names)
    assert tokenizer.decode(eval_sets["am"][0]["input_ids"][:8]) == "am valid"


def test_hub_source_points_to_mc4():
    source = HubLanguageSource("ja", "ja", split="validation")
    assert "allenai/c4 config 'ja' split 'validation'" in source.describe()
