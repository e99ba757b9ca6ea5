"""Language models for multilingual pretraining: from a config with size overrides, or pretrained.

`run_mlm_ldro.py` trains a causal LM (GPT-2 style) by default and a masked LM (RoBERTa style) with
`--mlm`. A model built from scratch starts from small sizes so that a first run finishes in
minutes on a CPU; `--config_overrides "n_layer=6,n_embd=512"` changes any config field, with the
same syntax as `PretrainedConfig.update_from_string`.
"""

from __future__ import annotations

import logging
from typing import Any

from transformers import (
    CONFIG_MAPPING,
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

logger = logging.getLogger(__name__)

DEFAULT_CAUSAL_MODEL_TYPE = "gpt2"
DEFAULT_MASKED_MODEL_TYPE = "roberta"

# Small sizes for a model built from a bare model type (no --config_name): 2 layers of width 128,
# about 0.4M parameters plus the embeddings. --config_overrides is applied on top of them.
SMALL_MODEL_SIZES: dict[str, dict[str, Any]] = {
    "gpt2": {"n_layer": 2, "n_head": 2, "n_embd": 128},
    "roberta": {
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "hidden_size": 128,
        "intermediate_size": 512,
    },
    "bert": {
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "hidden_size": 128,
        "intermediate_size": 512,
    },
}

# RoBERTa-family models number positions from pad_token_id + 1, so a block of B tokens needs
# B + pad_token_id + 1 position embeddings.
PADDING_OFFSET_POSITION_MODEL_TYPES = frozenset({"roberta", "xlm-roberta", "camembert"})


def default_model_type(mlm: bool) -> str:
    """Return the model type used when neither a config nor a pretrained model is given."""
    return DEFAULT_MASKED_MODEL_TYPE if mlm else DEFAULT_CAUSAL_MODEL_TYPE


def required_position_embeddings(config: PretrainedConfig, block_size: int) -> int:
    """Return how many position embeddings `config` needs for blocks of `block_size` tokens."""
    if config.model_type in PADDING_OFFSET_POSITION_MODEL_TYPES:
        return block_size + int(config.pad_token_id or 0) + 1
    return block_size


def _special_token_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    """Return the tokenizer's pad/bos/eos ids to store in a config built from scratch.

    A tokenizer without a BOS token (ByT5, most SentencePiece unigram models) reuses EOS, as GPT-2
    does, so `generate()` has a start token.
    """
    eos = tokenizer.eos_token_id
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    ids = {"pad_token_id": pad, "bos_token_id": bos, "eos_token_id": eos}
    return {name: value for name, value in ids.items() if value is not None}


def apply_config_overrides(config: PretrainedConfig, config_overrides: str) -> None:
    """Apply "field=value,..." overrides to `config`, raising a ValueError that names the fix."""
    try:
        config.update_from_string(config_overrides)
    except ValueError as error:
        raise ValueError(
            f"Invalid --config_overrides {config_overrides!r} for a {config.model_type} config: "
            f"{error}. Use comma-separated field=value pairs naming fields of that config."
        ) from error


def check_config_overrides(config_overrides: str, model_type: str | None = None, mlm: bool = False) -> None:
    """Apply `config_overrides` to a default config of the model type, to fail before any data work.

    Raises:
        ValueError: unknown model type or an override that the config rejects.
    """
    model_type = model_type or default_model_type(mlm)
    if model_type not in CONFIG_MAPPING:
        raise ValueError(unknown_model_type_message(model_type))
    apply_config_overrides(CONFIG_MAPPING[model_type](), config_overrides)


def unknown_model_type_message(model_type: str) -> str:
    return (
        f"Unknown --model_type {model_type!r}: use a model type of transformers such as "
        f"'{DEFAULT_CAUSAL_MODEL_TYPE}' (causal LM) or '{DEFAULT_MASKED_MODEL_TYPE}' (masked LM)."
    )


def build_config(
    tokenizer: PreTrainedTokenizerBase,
    *,
    block_size: int,
    mlm: bool = False,
    model_type: str | None = None,
    config_name: str | None = None,
    model_name_or_path: str | None = None,
    config_overrides: str | None = None,
    hub_kwargs: dict[str, Any] | None = None,
) -> PretrainedConfig:
    """Build the model config from a pretrained model, a named config or a bare model type.

    Precedence follows transformers' `run_clm.py`: `config_name`, then `model_name_or_path`, then a
    fresh config of `model_type` (default GPT-2, or RoBERTa when `mlm`) with `SMALL_MODEL_SIZES`.
    `config_overrides` ("n_layer=2,n_embd=128") is applied last; it is rejected for a pretrained
    model because its weights fix the sizes. A config built for a new model gets the tokenizer's
    vocabulary size and special-token ids, and enough position embeddings for `block_size`.

    Raises:
        ValueError: unknown model type, an override naming a field the config lacks, overrides
            with a pretrained model, or a config whose position embeddings are shorter than
            `block_size`.
    """
    hub_kwargs = hub_kwargs or {}
    if config_overrides and model_name_or_path:
        raise ValueError(
            f"--config_overrides {config_overrides!r} cannot change a pretrained model "
            f"({model_name_or_path}): its weights fix the sizes. Drop --model_name_or_path to "
            "train a new model, or drop --config_overrides."
        )

    from_scratch = model_name_or_path is None
    if config_name:
        config = AutoConfig.from_pretrained(config_name, **hub_kwargs)
    elif model_name_or_path:
        config = AutoConfig.from_pretrained(model_name_or_path, **hub_kwargs)
    else:
        model_type = model_type or default_model_type(mlm)
        if model_type not in CONFIG_MAPPING:
            raise ValueError(unknown_model_type_message(model_type))
        config = CONFIG_MAPPING[model_type]()
        for name, value in SMALL_MODEL_SIZES.get(model_type, {}).items():
            setattr(config, name, value)
        logger.info("Building a new %s model with sizes %s", model_type, SMALL_MODEL_SIZES.get(model_type))

    if from_scratch:
        config.vocab_size = len(tokenizer)
        for name, value in _special_token_ids(tokenizer).items():
            setattr(config, name, value)
        if not config_name:
            config.max_position_embeddings = required_position_embeddings(config, block_size)

    if config_overrides:
        apply_config_overrides(config, config_overrides)
        logger.info("Applied --config_overrides %r", config_overrides)

    if not from_scratch and len(tokenizer) > config.vocab_size:
        logger.info(
            "The tokenizer has %d tokens but the model %d embeddings; the embeddings will be resized.",
            len(tokenizer),
            config.vocab_size,
        )

    available = getattr(config, "max_position_embeddings", None)
    needed = required_position_embeddings(config, block_size)
    if available is not None and available < needed:
        raise ValueError(
            f"--block_size {block_size} needs {needed} position embeddings but the "
            f"{config.model_type} config has {available}: lower --block_size or raise the config's "
            f"max_position_embeddings (for a new model, --config_overrides)."
        )
    return config


def add_mask_token(tokenizer: PreTrainedTokenizerBase, mask_token: str = "<mask>") -> bool:
    """Add a mask token to a tokenizer that lacks one, for masked-LM pretraining.

    Byte-level and freshly trained unigram tokenizers usually have no mask token, and
    `DataCollatorForLanguageModeling(mlm=True)` needs one. Returns True when a token was added.
    """
    if tokenizer.mask_token is not None:
        return False
    tokenizer.add_special_tokens({"mask_token": mask_token})
    logger.info("Added mask token %r (id %d) to the tokenizer", mask_token, tokenizer.mask_token_id)
    return True


def build_model(
    config: PretrainedConfig,
    tokenizer: PreTrainedTokenizerBase,
    *,
    mlm: bool = False,
    model_name_or_path: str | None = None,
    hub_kwargs: dict[str, Any] | None = None,
) -> PreTrainedModel:
    """Create a new LM from `config`, or load `model_name_or_path`; returns a causal or masked LM.

    A pretrained model whose embedding matrix is smaller than the tokenizer's vocabulary (added
    tokens, a mask token) has its embeddings resized.
    """
    model_class = AutoModelForMaskedLM if mlm else AutoModelForCausalLM
    if model_name_or_path:
        model = model_class.from_pretrained(model_name_or_path, config=config, **(hub_kwargs or {}))
    else:
        try:
            model = model_class.from_config(config)
        except ValueError as error:
            kind = "masked" if mlm else "causal"
            raise ValueError(
                f"Model type {config.model_type!r} has no {kind} LM head in transformers: pick a "
                f"model type with one (for example '{default_model_type(mlm)}')."
            ) from error
        num_parameters = sum(parameter.numel() for parameter in model.parameters())
        logger.info("Created a new %s with %.2fM parameters", type(model).__name__, num_parameters / 1e6)

    embedding_size = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > embedding_size:
        model.resize_token_embeddings(len(tokenizer))
    return model
