"""Bad data input raises a DataError that names the value, file and line, and the fix."""

import gzip
import json
import logging
from pathlib import Path

import pytest

from hf_ldro.data import (
    DataError,
    HubLanguageSource,
    TaskStratifiedStream,
    TextFileSource,
    build_eval_datasets,
    byte_level_tokenizer,
    load_languages,
)
from hf_ldro.data.sources import gzip_read_error

UD_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "multilingual" / "ud"
needs_ud = pytest.mark.skipif(not UD_DIR.is_dir(), reason=f"UD multilingual data not found at {UD_DIR}")


def write_lines(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@needs_ud
def test_unknown_language_in_data_dir():
    with pytest.raises(DataError, match=r"Unknown languages \['xxx_Latn'\].*Available: .*eng_Latn"):
        load_languages(data_dir=UD_DIR, languages=["eng_Latn", "xxx_Latn"])


def test_unknown_mc4_code():
    with pytest.raises(DataError, match=r"Unknown mC4 language code 'eng'\. Available codes: af, am"):
        HubLanguageSource("eng", "eng")


def test_unknown_demo_language():
    with pytest.raises(DataError, match=r"Unknown languages \['klingon'\].*Available: bengali"):
        load_languages(languages=["klingon"])


def test_missing_data_dir(tmp_path):
    with pytest.raises(DataError, match="was not found"):
        load_languages(data_dir=tmp_path / "nowhere")


def test_language_folder_without_train_file(tmp_path):
    (tmp_path / "eng").mkdir()
    write_lines(tmp_path / "yor" / "train.jsonl", [json.dumps({"text": "x"})])
    with pytest.raises(DataError, match=r"Language folder '.*eng' has no train file.*\(leave it out of --languages\)"):
        load_languages(data_dir=tmp_path)


def test_missing_validation_file_warns(tmp_path, caplog):
    write_lines(tmp_path / "yor" / "train.jsonl", [json.dumps({"text": "x"})])
    with caplog.at_level(logging.WARNING):
        data = load_languages(data_dir=tmp_path)
    assert data.validation_sources == {}
    assert "'yor' has no validation file" in caplog.text


def test_empty_file(tmp_path):
    path = write_lines(tmp_path / "train.jsonl", ["", "   "])
    with pytest.raises(DataError, match=r"train.jsonl' for language 'yor' contains no documents"):
        TextFileSource("yor", [path])


def test_missing_file_in_list(tmp_path):
    with pytest.raises(DataError, match=r"missing.jsonl' for language 'yor' was not found"):
        load_languages(train_files=[f"yor={tmp_path / 'missing.jsonl'}"])


def test_invalid_json_line(tmp_path):
    path = write_lines(tmp_path / "train.jsonl", [json.dumps({"text": "ok"}), '{"text": "broken'])
    with pytest.raises(DataError, match=r"train.jsonl, line 2: invalid JSON") as raised:
        TextFileSource("yor", [path])
    assert "(Unterminated string starting at column 10)" in str(raised.value)
    assert "at at" not in str(raised.value)


def test_invalid_json_position_wording(tmp_path):
    path = write_lines(tmp_path / "train.jsonl", ['{"text" "no colon"}'])
    with pytest.raises(DataError, match=r"line 1: invalid JSON \(Expecting ':' delimiter at column 9\)"):
        TextFileSource("yor", [path])


def test_line_without_text_field(tmp_path):
    path = write_lines(tmp_path / "train.jsonl", [json.dumps({"text": "ok"}), "", json.dumps({"body": "x"})])
    with pytest.raises(DataError, match=r"line 3: missing text field 'text' \(found \['body'\]\).*--text_field"):
        TextFileSource("yor", [path])


def test_other_text_field_accepted(tmp_path):
    path = write_lines(tmp_path / "train.jsonl", [json.dumps({"body": "x"})])
    assert list(TextFileSource("yor", [path], text_field="body").iter_documents()) == ["x"]


def test_invalid_utf8_rejected(tmp_path):
    path = tmp_path / "train.txt"
    path.write_bytes("good line\n".encode() + b"caf\xe9 latin-1\n")
    with pytest.raises(DataError, match=r"train.txt, line 2: invalid UTF-8 byte b'\\xe9'") as raised:
        TextFileSource("fra", [path])
    assert "pass --encoding_errors replace (encoding_errors='replace' in Python)" in str(raised.value)


def test_invalid_utf8_replaced_and_counted(tmp_path, caplog):
    path = tmp_path / "train.txt"
    path.write_bytes(b"caf\xe9\nok\n\xff\xfe bad\n")
    with caplog.at_level(logging.WARNING):
        source = TextFileSource("fra", [path], encoding_errors="replace")
    assert list(source.iter_documents())[0] == "caf\ufffd"
    assert "replaced invalid UTF-8 bytes with U+FFFD on 2 lines" in caplog.text


def test_unsupported_file_type(tmp_path):
    path = write_lines(tmp_path / "train.csv", ["a,b"])
    with pytest.raises(DataError, match="Unsupported file type"):
        TextFileSource("yor", [path])


def test_language_shorter_than_one_block(tmp_path):
    path = write_lines(tmp_path / "train.txt", ["tiny"])
    source = TextFileSource("yor", [path])
    with pytest.raises(DataError, match=r"'yor' has 5 tokens .* fewer than one block of block_size=64.*smaller --block_size.*drop it"):
        TaskStratifiedStream([source], byte_level_tokenizer(), block_size=64, batch_size=1)


def test_rank_without_documents(tmp_path):
    path = write_lines(tmp_path / "train.txt", ["one long document " * 10])
    with pytest.raises(DataError, match="'yor' has 1 documents, so rank 1 of 2 gets none"):
        TaskStratifiedStream([TextFileSource("yor", [path])], byte_level_tokenizer(), 16, 1, rank=1, world_size=2)
    stream = TaskStratifiedStream([TextFileSource("yor", [path])], byte_level_tokenizer(), 16, 1)
    with pytest.raises(DataError, match="rank 1 of 2 gets none"):
        stream.set_distributed(1, 2)


@needs_ud
def test_duplicate_languages_in_selection():
    with pytest.raises(DataError, match=r"Duplicate languages in the language list: \['eng_Latn'\]"):
        load_languages(data_dir=UD_DIR, languages=["eng_Latn", "yor_Latn", "eng_Latn"])


def test_duplicate_languages_in_file_list(tmp_path):
    path = write_lines(tmp_path / "a.txt", ["x"])
    with pytest.raises(DataError, match=r"Duplicate languages in train files: \['yor'\]"):
        load_languages(train_files=[f"yor={path}", f"yor={path}"])


def test_duplicate_hub_languages():
    with pytest.raises(DataError, match=r"Duplicate languages in the Hub languages: \['yo'\]"):
        load_languages(hub_languages=["yo", "am", "yo"])


def test_duplicate_sources_in_stream(tmp_path):
    path = write_lines(tmp_path / "a.txt", ["x" * 40])
    sources = [TextFileSource("yor", [path]), TextFileSource("yor", [path])]
    with pytest.raises(ValueError, match="Duplicate task names"):
        TaskStratifiedStream(sources, byte_level_tokenizer(), 8, 2)


def test_malformed_file_list_entry(tmp_path):
    with pytest.raises(DataError, match="write LANG=PATH"):
        load_languages(train_files=[str(tmp_path / "a.txt")])


def test_hub_row_without_text_field(tmp_path):
    path = write_lines(tmp_path / "c4-yo.json", [json.dumps({"content": "x"})])
    source = HubLanguageSource("yo", "yo", data_files=[path])
    with pytest.raises(DataError, match=r"row 0: missing or non-string text field 'text' \(columns: \['content'\]\).*--text_field"):
        list(source.iter_documents())


def test_bad_sampling_probabilities(tmp_path):
    path = write_lines(tmp_path / "a.txt", ["x" * 40])
    sources = [TextFileSource("aa", [path]), TextFileSource("bb", [path])]
    with pytest.raises(ValueError, match="must sum to 1"):
        TaskStratifiedStream(sources, byte_level_tokenizer(), 8, 2, sampling_probabilities=[0.5, 0.6])


def test_unreachable_hub_explained(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = HubLanguageSource("yo", "yo")
    with pytest.raises(DataError, match=r"Could not reach allenai/c4 config 'yo'") as raised:
        next(source.iter_documents())
    assert "use --data_dir with local files of the same schema" in str(raised.value)
    assert "hub_data_files= in the Python API" in str(raised.value)


# ------------------------------------------------------------------ damaged gzip files


def jsonl_bytes(count):
    return "".join(json.dumps({"text": f"document {i} " + "x" * 60}) + "\n" for i in range(count)).encode()


def write_truncated_gzip(path, count=2000):
    """Write the first half of a gzip file, as an interrupted download leaves it."""
    compressed = gzip.compress(jsonl_bytes(count))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(compressed[: len(compressed) // 2])
    return path


def test_truncated_gzip_train_file(tmp_path):
    path = write_truncated_gzip(tmp_path / "yor" / "train.jsonl.gz")
    with pytest.raises(DataError) as raised:
        load_languages(data_dir=tmp_path)
    message = str(raised.value)
    assert str(path) in message
    assert "is truncated" in message
    assert "reading stopped after line " in message
    assert "Re-download the file, or re-compress" in message


def test_plain_text_named_gz(tmp_path):
    path = tmp_path / "yor" / "train.jsonl.gz"
    write_lines(path, [json.dumps({"text": "plain"})])
    with pytest.raises(DataError) as raised:
        load_languages(data_dir=tmp_path)
    message = str(raised.value)
    assert f"{path} is not a gzip file" in message
    assert "rename it to train.jsonl" in message


def test_corrupt_gzip_data(tmp_path):
    compressed = bytearray(gzip.compress(jsonl_bytes(200)))
    compressed[30:40] = b"\xff" * 10
    path = tmp_path / "train.jsonl.gz"
    path.write_bytes(bytes(compressed))
    with pytest.raises(DataError, match=r"train\.jsonl\.gz: the gzip data is corrupt before the first line \(Error -3"):
        TextFileSource("yor", [path])


def test_gzip_checksum_mismatch(tmp_path):
    compressed = bytearray(gzip.compress(jsonl_bytes(20)))
    compressed[-6] ^= 0xFF
    path = tmp_path / "train.jsonl.gz"
    path.write_bytes(bytes(compressed))
    with pytest.raises(DataError, match=r"the gzip data is corrupt after line 20 \(CRC check failed"):
        TextFileSource("yor", [path])


def test_gzip_unreadable_message(tmp_path):
    path = tmp_path / "train.jsonl.gz"
    error = gzip_read_error(path, PermissionError(13, "Permission denied"), "before the first line")
    assert "reading the gzip file failed before the first line (PermissionError" in str(error)


def test_gzip_content_without_gz_name(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(gzip.compress(jsonl_bytes(3)))
    with pytest.raises(DataError, match=r"train\.jsonl is gzip-compressed .* rename it to train\.jsonl\.gz"):
        TextFileSource("yor", [path])


def test_validation_gzip_truncated_before_eval(tmp_path):
    """A validation file damaged after loading fails in evaluation-set building with a DataError."""
    write_lines(tmp_path / "yor" / "train.jsonl", [json.dumps({"text": "x" * 40})])
    validation_path = tmp_path / "yor" / "validation.jsonl.gz"
    validation_path.write_bytes(gzip.compress(jsonl_bytes(2000)))
    data = load_languages(data_dir=tmp_path)
    write_truncated_gzip(validation_path)
    with pytest.raises(DataError) as raised:
        build_eval_datasets(data.validation_sources, byte_level_tokenizer(), 32, data.task_names)
    assert str(validation_path) in str(raised.value)
    assert "is truncated" in str(raised.value)


def test_hub_local_file_not_gzip(tmp_path):
    path = write_lines(tmp_path / "c4-yo.json.gz", [json.dumps({"text": "plain"})])
    source = HubLanguageSource("yo", "yo", data_files=[path])
    with pytest.raises(DataError, match=rf"{path} is not a gzip file .*rename it to c4-yo\.json"):
        list(source.iter_documents())


def test_hub_local_gzip_truncated(tmp_path):
    path = write_truncated_gzip(tmp_path / "c4-yo.json.gz")
    source = HubLanguageSource("yo", "yo", data_files=[path])
    with pytest.raises(DataError, match=rf"{path}: the gzip file is truncated"):
        list(source.iter_documents())


# ------------------------------------------------------------------ data folder layout


def test_hidden_and_cache_folders_skipped(tmp_path, caplog):
    write_lines(tmp_path / "yor" / "train.jsonl", [json.dumps({"text": "x"})])
    for name in (".cache", "__pycache__", "_scratch"):
        (tmp_path / name).mkdir()
    with caplog.at_level(logging.DEBUG, logger="hf_ldro.data.languages"):
        data = load_languages(data_dir=tmp_path)
    assert data.task_names == ["yor"]
    assert "Skipping folder" in caplog.text
    assert ".cache" in caplog.text


def test_only_hidden_folders_is_empty_data_dir(tmp_path):
    (tmp_path / ".cache").mkdir()
    with pytest.raises(DataError, match="has no language subfolders"):
        load_languages(data_dir=tmp_path)


def test_requested_hidden_folder_rejected(tmp_path):
    write_lines(tmp_path / ".cache" / "train.jsonl", [json.dumps({"text": "x"})])
    with pytest.raises(DataError, match=r"Languages \['\.cache'\] in data folder .* start with '\.' or '_'"):
        load_languages(data_dir=tmp_path, languages=[".cache"])


def test_hub_truncated_among_several_gzip(tmp_path):
    good_path = tmp_path / "c4-yo-0.json.gz"
    good_path.write_bytes(gzip.compress(jsonl_bytes(10)))
    truncated_path = write_truncated_gzip(tmp_path / "c4-yo-1.json.gz")
    source = HubLanguageSource("yo", "yo", data_files=[good_path, truncated_path])
    with pytest.raises(DataError, match=r"Reading the gzip files of language 'yo' failed") as raised:
        list(source.iter_documents())
    assert str(good_path) in str(raised.value)
    assert str(truncated_path) in str(raised.value)
    assert "gzip -t FILE" in str(raised.value)
