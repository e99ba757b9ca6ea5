"""hf_ldro.modeling: configs with size overrides, position embeddings, mask token, pretrained models."""

from __future__ import annotations

import pytest
import torch
from transformers import ByT5Tokenizer, GPT2Config

from hf_ldro.modeling import (
    SMALL_MODEL_SIZES,
    add_mask_token,
    build_config,
    build_model,
    check_config_overrides,
)


@pytest.fixture
def tokenizer():
    return ByT5Tokenizer()


def test_default_causal_config_is_small_gpt2(tokenizer):
    config = build_config(tokenizer, block_size=48)
    assert config.model_type == "gpt2"
    for name, value in SMALL_MODEL_SIZES["gpt2"].items():
        assert getattr(config, name) == value
    assert config.vocab_size == len(tokenizer)
    assert config.n_positions == 48
    assert config.eos_token_id == tokenizer.eos_token_id
    assert config.pad_token_id == tokenizer.pad_token_id


def test_overrides_apply_after_small_sizes(tokenizer):
    config = build_config(tokenizer, block_size=16, config_overrides="n_layer=3,n_embd=64")
    assert config.n_layer == 3
    assert config.n_embd == 64
    assert config.n_head == SMALL_MODEL_SIZES["gpt2"]["n_head"]


def test_unknown_override_field(tokenizer):
    with pytest.raises(ValueError, match="n_layers"):
        build_config(tokenizer, block_size=16, config_overrides="n_layers=3")


def test_check_overrides_before_data(tokenizer):
    with pytest.raises(ValueError, match="hidden_sise"):
        check_config_overrides("hidden_sise=64", mlm=True)


def test_unknown_model_type(tokenizer):
    with pytest.raises(ValueError, match="no_such_model"):
        build_config(tokenizer, block_size=16, model_type="no_such_model")


def test_overrides_rejected_for_pretrained(tokenizer, tmp_path):
    with pytest.raises(ValueError, match="pretrained"):
        build_config(tokenizer, block_size=16, model_name_or_path=str(tmp_path), config_overrides="n_layer=1")


def test_named_config_too_short_for_block(tokenizer, tmp_path):
    GPT2Config(n_positions=32, n_layer=1, n_embd=16, n_head=2).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="block_size 64"):
        build_config(tokenizer, block_size=64, config_name=str(tmp_path))


def test_named_config_gets_tokenizer_vocabulary(tokenizer, tmp_path):
    GPT2Config(n_positions=128, n_layer=1, n_embd=16, n_head=2).save_pretrained(tmp_path)
    config = build_config(tokenizer, block_size=64, config_name=str(tmp_path))
    assert config.vocab_size == len(tokenizer)
    assert config.n_positions == 128


def test_masked_lm_full_block_forward(tokenizer):
    add_mask_token(tokenizer)
    block_size = 32
    config = build_config(tokenizer, block_size=block_size, mlm=True)
    assert config.model_type == "roberta"
    # RoBERTa numbers positions from pad_token_id + 1.
    assert config.max_position_embeddings == block_size + tokenizer.pad_token_id + 1
    model = build_model(config, tokenizer, mlm=True)
    input_ids = torch.randint(3, 200, (2, block_size))
    logits = model(input_ids=input_ids).logits
    assert logits.shape == (2, block_size, len(tokenizer))


def test_mask_token_added_once(tokenizer):
    assert add_mask_token(tokenizer) is True
    assert add_mask_token(tokenizer) is False
    assert tokenizer.mask_token == "<mask>"


def test_pretrained_embeddings_resized(tokenizer, tmp_path):
    config = build_config(tokenizer, block_size=16, config_overrides="n_layer=1,n_embd=16")
    build_model(config, tokenizer).save_pretrained(tmp_path)
    add_mask_token(tokenizer)
    loaded_config = build_config(tokenizer, block_size=16, model_name_or_path=str(tmp_path))
    model = build_model(loaded_config, tokenizer, model_name_or_path=str(tmp_path))
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer)
