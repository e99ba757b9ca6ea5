"""LDROArguments: command-line parsing next to TrainingArguments, JSON mappings, validation."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import HfArgumentParser, TrainingArguments

from hf_ldro.arguments import LDROArguments, weighting_from_arguments
from hf_ldro.weighting import BaselinedDRO, OnlineDRO, StaticMixing


def parse(*argv):
    parser = HfArgumentParser((TrainingArguments, LDROArguments))
    return parser.parse_args_into_dataclasses(args=["--output_dir", "unused", *argv])


def test_parser_accepts_both_dataclasses():
    training_args, ldro_args = parse("--method", "dro", "--dro_eta", "0.1", "--logging_steps", "7")

    assert ldro_args.method == "dro"
    assert ldro_args.dro_eta == 0.1
    assert training_args.logging_steps == 7


def test_inline_json_reference_losses():
    _, ldro_args = parse("--method", "baselined_dro", "--reference_losses", '{"eng": 3.5, "yor": 4}')

    assert ldro_args.reference_losses == {"eng": 3.5, "yor": 4.0}


def test_reference_losses_from_file(tmp_path):
    path = tmp_path / "reference.json"
    path.write_text(json.dumps({"eng": 3.0}))
    _, ldro_args = parse("--method", "baselined_dro", "--reference_losses", str(path))

    assert ldro_args.reference_losses == {"eng": 3.0}


def test_unknown_method_is_rejected():
    with pytest.raises(SystemExit):
        parse("--method", "magic")


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(method="magic"), "method='magic' is unknown"),
        (dict(mixing_alpha=1.5), "mixing_alpha must be in"),
        (dict(dro_eta=-1.0), "dro_eta must be"),
        (dict(ldro_update_interval=0), "ldro_update_interval must be"),
        (dict(sketch_dim=-1), "sketch_dim must be"),
        (dict(max_consecutive_nonfinite=0), "max_consecutive_nonfinite must be"),
        (dict(interaction_parameters="("), "not a valid regular expression"),
        (dict(gradient_buffer_dtype="int8"), "gradient_buffer_dtype='int8' is unknown"),
        (dict(method="baselined_dro"), "needs reference_losses"),
        (dict(dataset_sizes="{not json"), "neither an existing JSON file"),
    ],
)
def test_invalid_options_are_explained(options, message):
    with pytest.raises(ValueError, match=message):
        LDROArguments(**options)


def test_weighting_from_arguments_builds_each_strategy():
    tasks = ["eng", "yor"]
    static = weighting_from_arguments(
        LDROArguments(method="static", mixing_alpha=1.0, dataset_sizes={"eng": 3, "yor": 1}), tasks
    )
    dro = weighting_from_arguments(LDROArguments(method="dro", dro_eta=0.2), tasks)
    baselined = weighting_from_arguments(
        LDROArguments(method="baselined_dro", reference_losses={"eng": 1.0, "yor": 2.0}), tasks
    )

    assert isinstance(static, StaticMixing)
    assert torch.allclose(static.weights, torch.tensor([0.75, 0.25], dtype=torch.float64))
    assert isinstance(dro, OnlineDRO)
    assert dro.eta == 0.2
    assert isinstance(baselined, BaselinedDRO)


def test_dataset_sizes_must_cover_every_task():
    with pytest.raises(ValueError, match=r"missing task\(s\) \['yor'\]"):
        weighting_from_arguments(LDROArguments(method="static", dataset_sizes={"eng": 3}), ["eng", "yor"])
