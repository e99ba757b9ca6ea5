"""Shared helpers for the LDROTrainer tests: real UD text, packed byte blocks, a tiny GPT-2.

This module contains no tests; the test_trainer*.py files import it.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "multilingual" / "ud"
LANGUAGES = ["eng_Latn", "yor_Latn", "amh_Ethi", "jpn_Jpan"]
BLOCK_SIZE = 32


def require_ud_data() -> Path:
    if not (DATA_DIR / LANGUAGES[0] / "train.jsonl.gz").is_file():
        pytest.skip(f"UD multilingual data not found under {DATA_DIR}")
    return DATA_DIR


def read_texts(language: str, split: str, max_characters: int) -> list[str]:
    texts, total = [], 0
    with gzip.open(DATA_DIR / language / f"{split}.jsonl.gz", "rt", encoding="utf-8") as stream:
        for line in stream:
            text = json.loads(line)["text"]
            texts.append(text)
            total += len(text)
            if total >= max_characters:
                break
    return texts


def packed_blocks(tokenizer, texts: list[str], block_size: int, max_blocks: int) -> list[list[int]]:
    """Concatenate the byte ids of `texts` (each ended by EOS) and cut full blocks."""
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        ids.append(tokenizer.eos_token_id)
        if len(ids) >= block_size * max_blocks:
            break
    count = min(max_blocks, len(ids) // block_size)
    return [ids[i * block_size : (i + 1) * block_size] for i in range(count)]


def byte_tokenizer():
    from transformers import ByT5Tokenizer

    return ByT5Tokenizer()


def language_dataset(
    languages, split: str, blocks_per_language: int, interleave: bool = True, masked_prefix: bool = False
):
    """Return a datasets.Dataset of packed blocks with input_ids, labels and task_ids.

    With `interleave`, rows cycle through the languages, so every batch whose size is a multiple of
    the number of languages contains each language equally often. With `masked_prefix`, row r has its
    first (r * 5) % BLOCK_SIZE labels set to -100, so examples have different token counts.
    """
    from datasets import Dataset

    require_ud_data()
    tokenizer = byte_tokenizer()
    per_language = []
    for language in languages:
        texts = read_texts(language, split, max_characters=blocks_per_language * BLOCK_SIZE * 4)
        blocks = packed_blocks(tokenizer, texts, BLOCK_SIZE, blocks_per_language)
        assert len(blocks) == blocks_per_language, f"{language} {split}: only {len(blocks)} blocks"
        per_language.append(blocks)
    rows = {"input_ids": [], "labels": [], "task_ids": []}
    if interleave:
        order = [(j, i) for i in range(blocks_per_language) for j in range(len(languages))]
    else:
        order = [(j, i) for j in range(len(languages)) for i in range(blocks_per_language)]
    for task, index in order:
        block = per_language[task][index]
        rows["input_ids"].append(block)
        labels = list(block)
        if masked_prefix:
            hidden = (len(rows["labels"]) * 5) % BLOCK_SIZE
            labels[:hidden] = [-100] * hidden
        rows["labels"].append(labels)
        rows["task_ids"].append(task)
    return Dataset.from_dict(rows)


def eval_datasets(languages, blocks_per_language: int = 3):
    """Return {language: Dataset} of validation blocks (no task column needed)."""
    datasets = {}
    for language in languages:
        dataset = language_dataset([language], "validation", blocks_per_language)
        datasets[language] = dataset.remove_columns("task_ids")
    return datasets


def tiny_gpt2(seed: int = 0):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=384,
        n_positions=BLOCK_SIZE,
        n_embd=64,
        n_layer=2,
        n_head=2,
        bos_token_id=1,
        eos_token_id=1,
        pad_token_id=0,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    return GPT2LMHeadModel(config)


def training_arguments(output_dir, **overrides):
    from transformers import TrainingArguments

    values = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=8,
        per_device_eval_batch_size=4,
        max_steps=6,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
        dataloader_drop_last=False,
    )
    values.update(overrides)
    return TrainingArguments(**values)


class LogCapture:
    """A TrainerCallback that records every `on_log` dict."""

    def __init__(self):
        from transformers import TrainerCallback

        records = self.records = []

        class _Capture(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):
                records.append(dict(logs or {}))

        self.callback = _Capture()

    def training_logs(self):
        return [record for record in self.records if "loss" in record]
