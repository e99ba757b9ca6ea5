"""Two-process CPU DDP (gloo, torchrun) against one process that trains on the same batches.

One torchrun launch of tests/ddp_worker.py trains every case on two ranks. Each rank saves the
micro-batches it trained on and its weights after every optimizer step. One process then trains on
the union of both ranks' micro-batches (global batch 8 = 2 ranks x 4), so any difference comes from
the distributed code, not from the data order. The tolerances allow for float32 rounding only,
because the reductions add the same numbers in another order.

A second launch runs run_mlm_ldro.py itself on two ranks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

import ddp_worker
from hf_ldro.data.packing import encode_documents
from test_trainer_data import LANGUAGES, language_dataset, require_ud_data

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]
WORLD_SIZE = 2
LAUNCH_TIMEOUT_S = 400

WEIGHT_ATOL = 1e-6
LOSS_RTOL = 1e-5
PARAMETER_ATOL = 1e-5
MATRIX_RTOL = 1e-5  # relative to the largest entry of the matrix


def torchrun_path() -> str:
    found = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    if not Path(found).exists():
        pytest.skip("torchrun was not found next to the Python interpreter")
    return found


def launch_environment(tmp_path: Path) -> dict[str, str]:
    return dict(
        os.environ,
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        HF_HOME=str(tmp_path / "hf_home"),
        PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
    )


def launch(tmp_path: Path, *arguments: str) -> subprocess.CompletedProcess:
    command = [torchrun_path(), "--standalone", f"--nproc_per_node={WORLD_SIZE}", *arguments]
    try:
        return subprocess.run(
            command,
            env=launch_environment(tmp_path),
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=LAUNCH_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as error:
        output = (error.stderr or b"")[-3000:]
        pytest.fail(f"{' '.join(command)} timed out after {LAUNCH_TIMEOUT_S} s (a rank may hang):\n{output}")


def case_unavailable_reason(case: str) -> str | None:
    """Return why `case` cannot run in this version of the package, or None."""
    method = case.split("-", 1)[1]
    try:
        ddp_worker.build_weighting(method, ddp_worker.method_arguments(method))
    except NotImplementedError as error:
        return f"method {method} is not available: {error}"
    return None


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Return {case: (records of ranks 0 and 1, one-process record)} and the DDP output folder."""
    require_ud_data()
    tmp_path = tmp_path_factory.mktemp("ddp")
    cases = [case for case in ddp_worker.CASES if case_unavailable_reason(case) is None]
    result = launch(tmp_path, str(REPO_ROOT / "tests" / "ddp_worker.py"), str(tmp_path), *cases)
    assert result.returncode == 0, result.stderr[-5000:]

    records = {}
    for case in cases:
        ranks = [torch.load(tmp_path / case / f"rank{rank}.pt", weights_only=False) for rank in range(WORLD_SIZE)]
        single = ddp_worker.replay_single_process(case, str(tmp_path / f"single-{case}"), ranks)
        records[case] = (ranks, single)
    return records, tmp_path


def case_records(runs, case):
    records, _ = runs
    if case not in records:
        pytest.skip(case_unavailable_reason(case))
    return records[case]


@pytest.mark.parametrize("case", ddp_worker.CASES)
def test_ranks_see_world_size_two(runs, case):
    ranks, _ = case_records(runs, case)

    assert [record["world_size"] for record in ranks] == [WORLD_SIZE] * WORLD_SIZE
    assert [record["rank"] for record in ranks] == list(range(WORLD_SIZE))


@pytest.mark.parametrize("case", ddp_worker.CASES)
def test_ranks_have_identical_weights_every_step(runs, case):
    ranks, _ = case_records(runs, case)

    assert len(ranks[0]["weights"]) == ddp_worker.STEPS
    for step, (weights_0, weights_1) in enumerate(zip(ranks[0]["weights"], ranks[1]["weights"])):
        assert weights_0 == weights_1, f"step {step + 1}: rank 0 {weights_0} != rank 1 {weights_1}"


@pytest.mark.parametrize("case", ddp_worker.CASES)
def test_ranks_have_identical_interaction_matrices(runs, case):
    ranks, _ = case_records(runs, case)
    expected_refreshes = len(range(0, ddp_worker.STEPS, ddp_worker.REFRESH_INTERVAL))

    assert len(ranks[0]["matrices"]) == expected_refreshes
    assert len(ranks[1]["matrices"]) == expected_refreshes
    for index, (matrix_0, matrix_1) in enumerate(zip(ranks[0]["matrices"], ranks[1]["matrices"])):
        assert torch.equal(matrix_0, matrix_1), f"refresh {index}"


@pytest.mark.parametrize("case", ddp_worker.CASES)
def test_weights_move_away_from_uniform(runs, case):
    # Guards the comparisons below against passing because nothing happened.
    ranks, _ = case_records(runs, case)
    final = torch.tensor(ranks[0]["weights"][-1], dtype=torch.float64)

    assert float((final - 1 / len(LANGUAGES)).abs().max()) > 0.01


@pytest.mark.parametrize("case", ddp_worker.CASES)
def test_weights_match_one_process(runs, case):
    ranks, single = case_records(runs, case)
    distributed = torch.tensor(ranks[0]["weights"], dtype=torch.float64)
    expected = torch.tensor(single["weights"], dtype=torch.float64)

    assert distributed.shape == expected.shape
    assert torch.allclose(distributed, expected, rtol=0, atol=WEIGHT_ATOL), (distributed - expected).abs().max()


@pytest.mark.parametrize("case", ddp_worker.CASES)
def test_losses_match_one_process(runs, case):
    ranks, single = case_records(runs, case)
    logged = torch.tensor(ranks[0]["logged_losses"])
    estimates = torch.tensor(ranks[0]["loss_estimates"])

    assert len(logged) == ddp_worker.STEPS
    assert torch.allclose(logged, torch.tensor(single["logged_losses"]), rtol=LOSS_RTOL, atol=0)
    assert torch.allclose(estimates, torch.tensor(single["loss_estimates"]), rtol=LOSS_RTOL, atol=0)


@pytest.mark.parametrize("case", ddp_worker.CASES)
def test_parameters_match_one_process(runs, case):
    ranks, single = case_records(runs, case)

    for name, expected in single["parameters"].items():
        assert torch.allclose(ranks[0]["parameters"][name], expected, rtol=0, atol=PARAMETER_ATOL), name


@pytest.mark.parametrize("case", ddp_worker.CASES)
def test_interaction_matrices_match_one_process(runs, case):
    ranks, single = case_records(runs, case)

    assert len(ranks[0]["matrices"]) == len(single["matrices"])
    for index, (distributed, expected) in enumerate(zip(ranks[0]["matrices"], single["matrices"])):
        scale = float(expected.abs().max())
        error = float((distributed - expected).abs().max())
        assert error <= MATRIX_RTOL * scale, f"refresh {index}: error {error}, largest entry {scale}"


def test_task_weights_log_written_once(runs):
    records, output_dir = runs
    case = next(iter(records))
    lines = (output_dir / case / "task_weights.jsonl").read_text(encoding="utf-8").splitlines()

    assert len(lines) == ddp_worker.STEPS


def trained_rows(ranks) -> Counter:
    rows = Counter()
    for record in ranks:
        for batch in record["batches"]:
            for input_ids, labels in zip(batch["input_ids"].tolist(), batch["labels"].tolist()):
                rows[(tuple(input_ids), tuple(labels))] += 1
    return rows


def test_map_dataset_rows_trained_once_across_ranks(runs):
    ranks, _ = case_records(runs, "map-dro")
    dataset = language_dataset(LANGUAGES, "train", blocks_per_language=12, masked_prefix=True)
    expected = Counter((tuple(row["input_ids"]), tuple(row["labels"])) for row in dataset)

    # STEPS x 2 ranks x 4 rows is exactly one epoch of the dataset.
    assert trained_rows(ranks) == expected


def language_token_stream(record, task: int) -> list[int]:
    """Concatenate, in training order, the blocks of task `task` that one rank trained on."""
    tokens = []
    for batch in record["batches"]:
        for input_ids, task_id in zip(batch["input_ids"].tolist(), batch["task_ids"].tolist()):
            if task_id == task:
                tokens.extend(input_ids)
    return tokens


def documents_read(tokens: list[int], documents: list[list[int]], rank: int) -> list[int]:
    """Return the indices of the documents that rank `rank`'s token stream covers.

    Asserts that the stream is exactly documents rank, rank + 2, rank + 4, ... (each ended by EOS)
    packed in order, which is the stream's sharding rule for two ranks.
    """
    shard = list(range(rank, len(documents), WORLD_SIZE))
    expected = [token for index in shard for token in documents[index]]
    assert tokens == expected[: len(tokens)], f"rank {rank} did not read its shard in order"
    covered, position = [], 0
    for index in shard:
        if position >= len(tokens):
            break
        covered.append(index)
        position += len(documents[index])
    return covered


@pytest.mark.parametrize("language", LANGUAGES)
def test_stream_shards_documents_between_ranks(runs, language):
    ranks, _ = case_records(runs, "stream-dro")
    task = LANGUAGES.index(language)
    tokenizer = ddp_worker.byte_level_tokenizer()
    texts = ddp_worker.read_documents(language, ddp_worker.STREAM_DOCUMENTS_PER_LANGUAGE)
    documents = encode_documents(tokenizer, texts, tokenizer.eos_token_id)

    covered = [documents_read(language_token_stream(record, task), documents, rank) for rank, record in enumerate(ranks)]

    assert covered[0], "rank 0 trained on no block of this language"
    assert covered[1], "rank 1 trained on no block of this language"
    assert not set(covered[0]) & set(covered[1])


def test_run_mlm_ldro_under_torchrun(tmp_path):
    data_dir = require_ud_data()
    output_dir = tmp_path / "run"
    result = launch(
        tmp_path,
        str(REPO_ROOT / "run_mlm_ldro.py"),
        "--output_dir", str(output_dir),
        "--data_dir", str(data_dir),
        "--languages", ",".join(LANGUAGES),
        "--byte_tokenizer",
        "--config_overrides", "n_layer=1,n_embd=32,n_head=2",
        "--block_size", "64",
        "--max_eval_blocks", "4",
        "--method", "dro",
        "--max_steps", "4",
        "--logging_steps", "2",
        "--save_steps", "4",
        "--disable_tqdm", "true",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-5000:]

    checkpoint = output_dir / "checkpoint-4"
    stream_states = [
        json.loads((checkpoint / f"task_stream_state_rank{rank}.json").read_text(encoding="utf-8"))
        for rank in range(WORLD_SIZE)
    ]
    weight_lines = (output_dir / "task_weights.jsonl").read_text(encoding="utf-8").splitlines()

    assert (output_dir / "eval_results.json").is_file()
    assert len(weight_lines) == 2
    assert [state["rank"] for state in stream_states] == [0, 1]
    assert [state["world_size"] for state in stream_states] == [WORLD_SIZE, WORLD_SIZE]
