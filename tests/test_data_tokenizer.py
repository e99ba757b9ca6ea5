"""Tokenizers: SentencePiece training on a language mix, save/load round trip, byte level."""

from pathlib import Path

import pytest
import sentencepiece as spm
from transformers import AutoTokenizer

from hf_ldro.data import (
    BYTE_LEVEL,
    TaskStratifiedStream,
    build_tokenizer,
    load_languages,
    temperature_probabilities,
    train_sentencepiece_tokenizer,
)
from hf_ldro.data.tokenizer import SPIECE_MODEL_FILE, normalize_text, sample_training_text

UD_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "multilingual" / "ud"
LANGUAGES = ["eng_Latn", "yor_Latn", "amh_Ethi", "jpn_Jpan"]
SAMPLES = [
    "The quick brown fox jumps over the lazy dog.",
    "Ọlọ́run sì wí pé, “Jẹ́ kí ìmọ́lẹ̀ kí ó wà,” ìmọ́lẹ̀ sì wà.",
    "ሰላም ለዓለም",
    "吾輩は猫である。名前はまだ無い。",
    "Unseen script: Ꭰ Ꭱ Ꭲ and emoji 🦜",
]

pytestmark = pytest.mark.skipif(not UD_DIR.is_dir(), reason=f"UD multilingual data not found at {UD_DIR}")


@pytest.fixture(scope="module")
def data():
    return load_languages(data_dir=UD_DIR, languages=LANGUAGES)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizer")
    tokenizer = train_sentencepiece_tokenizer(data.train_sources, folder, vocab_size=6000, max_documents_per_language=300)
    return tokenizer, folder


def test_temperature_probabilities_flatten_sizes():
    probabilities = temperature_probabilities({"big": 1000.0, "small": 10.0}, alpha=0.5)
    assert probabilities["big"] == pytest.approx(10 / 11)
    assert temperature_probabilities({"big": 1000.0, "small": 10.0}, alpha=0.0)["small"] == 0.5


def test_sampling_mix_upsamples_small_languages(data):
    lines = sample_training_text(data.train_sources, alpha=0.0, max_documents_per_language=300)
    yoruba = {normalize_text(t) for t in data.train_sources["yor_Latn"].iter_documents()}
    english = {normalize_text(t) for t in data.train_sources["eng_Latn"].iter_documents()}
    yoruba_characters = sum(len(line) for line in lines if line in yoruba)
    english_characters = sum(len(line) for line in lines if line in english)
    assert yoruba_characters == pytest.approx(english_characters, rel=0.2)


def test_trained_tokenizer_has_special_tokens(trained):
    tokenizer, _ = trained
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    assert 1000 < len(tokenizer) <= 6000


def test_trained_tokenizer_matches_sentencepiece(trained):
    tokenizer, folder = trained
    processor = spm.SentencePieceProcessor(model_file=str(folder / SPIECE_MODEL_FILE))
    for text in SAMPLES:
        expected = processor.encode(normalize_text(text))
        assert tokenizer(text, add_special_tokens=False)["input_ids"] == expected, text


def test_save_load_round_trip(trained):
    tokenizer, folder = trained
    reloaded = AutoTokenizer.from_pretrained(folder)
    for text in SAMPLES:
        assert reloaded(text)["input_ids"] == tokenizer(text)["input_ids"], text
    assert (reloaded.pad_token, reloaded.eos_token, reloaded.unk_token) == ("<pad>", "</s>", "<unk>")


def test_decode_restores_normalized_text(trained):
    tokenizer, _ = trained
    for text in SAMPLES:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == normalize_text(text), text


def test_unseen_characters_fall_back_to_bytes(trained):
    tokenizer, _ = trained
    ids = tokenizer("Ꭰ🦜", add_special_tokens=False)["input_ids"]
    assert tokenizer.unk_token_id not in ids


def test_trained_tokenizer_feeds_stream(data, trained):
    tokenizer, _ = trained
    stream = TaskStratifiedStream(data.train_sources, tokenizer, 64, 4, data.task_names)
    batch = next(iter(stream.dataloader()))
    assert batch["input_ids"].shape == (4, 64)
    english_bytes = sum(len(t.encode()) for t in data.train_sources["eng_Latn"].iter_documents())
    assert stream.dataset_sizes["eng_Latn"] < english_bytes / 2


def test_too_small_vocabulary_explained(data, tmp_path):
    with pytest.raises(ValueError, match="Raise vocab_size"):
        train_sentencepiece_tokenizer(
            {"jpn_Jpan": data.train_sources["jpn_Jpan"]}, tmp_path, vocab_size=300, byte_fallback=False
        )


def test_build_tokenizer_byte_level():
    tokenizer = build_tokenizer(BYTE_LEVEL)
    assert tokenizer("ab", add_special_tokens=False)["input_ids"] == [100, 101]
    assert tokenizer.eos_token_id == 1


def test_build_tokenizer_loads_folder(trained):
    _, folder = trained
    assert len(build_tokenizer(str(folder))) == len(trained[0])


def test_build_tokenizer_needs_sources():
    with pytest.raises(ValueError, match="needs train_sources and output_dir"):
        build_tokenizer(None)
