#!/usr/bin/env python
"""Measure what task weighting costs on top of a plain `transformers.Trainer`.

One run trains the same small GPT-2 on the same batches (N languages of a UD-style data folder,
task-stratified, one language per block) with:

* `trainer`: plain `Trainer` on the token-mean loss (the baseline),
* `static`: `LDROTrainer` with static mixing weights applied to the loss,
* `dro`: `LDROTrainer` with online DRO,
* `ldro_k<K>`: `LDROTrainer` with online L-DRO, interaction matrix refreshed every K steps,

and reports tokens per second, the ratio to the plain Trainer and the peak memory of each
configuration. It also reports the time of one interaction refresh as a multiple of one plain
training step, and the time of the exact L-DRO game solver (maximum-entropy Nash equilibrium) on
40 x 40 games.

All configurations train in one process, one optimizer step each in turn
(`interleaved_training.py`), so load from other jobs on the machine falls on all of them alike;
the whole comparison is repeated `--repeats` times and the ratios are medians over the repeats.
Each step is timed in wall-clock and in CPU seconds. Timing starts after `--warmup_steps` steps
and covers `--steps` steps: with `--steps` a multiple of K the window holds exactly steps / K
refreshes. Peak memory comes from a separate short run of each configuration in a fresh process.

    python benchmarks/overhead.py --output benchmarks/results/overhead_cpu.json
    python benchmarks/overhead.py --device cuda --bf16 --batch_size 64 --block_size 512
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import multiprocessing
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments
from transformers import default_data_collator

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(Path(__file__).resolve().parent)]

from hf_ldro.arguments import LDROArguments, weighting_from_arguments  # noqa: E402
from hf_ldro.data import InMemorySource, TaskStratifiedStream, byte_level_tokenizer  # noqa: E402
from hf_ldro.games import max_entropy_equilibrium  # noqa: E402
from hf_ldro.interaction import interaction_matrix  # noqa: E402
from hf_ldro.trainer import LDROTrainer  # noqa: E402
from interleaved_training import train_interleaved  # noqa: E402

logger = logging.getLogger("overhead")

DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "multilingual" / "ud"
DOCUMENTS_PER_LANGUAGE = 400
NASH_TASKS = 40
NASH_GAMES = 50


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", type=Path, default=DEFAULT_DATA_DIR,
                        help="Folder with <language>/train.jsonl[.gz] files (default: %(default)s).")
    parser.add_argument("--num_tasks", type=int, default=20,
                        help="Number of languages (tasks), the first ones in sorted folder order.")
    parser.add_argument("--steps", type=int, default=100, help="Timed optimizer steps per run.")
    parser.add_argument("--warmup_steps", type=int, default=5, help="Untimed optimizer steps before timing.")
    parser.add_argument("--repeats", type=int, default=5,
                        help="Times the whole comparison is run; ratios are medians over them.")
    parser.add_argument("--batch_size", type=int, default=20, help="Examples (blocks) per optimizer step.")
    parser.add_argument("--block_size", type=int, default=128, help="Tokens per example.")
    parser.add_argument("--n_layer", type=int, default=2, help="GPT-2 layers.")
    parser.add_argument("--n_embd", type=int, default=128, help="GPT-2 width.")
    parser.add_argument("--ldro_intervals", default="100,10",
                        help="Comma-separated L-DRO refresh intervals k, one configuration each.")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (one device; no DDP).")
    parser.add_argument("--bf16", action="store_true", help="Train in bf16 mixed precision.")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch.set_num_threads (default 1, so that CPU time counts work, not "
                        "threads spinning on a shared machine); 0 keeps torch's own choice.")
    parser.add_argument("--memory_steps", type=int, default=3,
                        help="Steps of the peak-memory run of each configuration (a fresh process "
                        "each, after the timing); 0 skips it.")
    parser.add_argument("--output", type=Path, default=None, help="Write the results to this JSON file.")
    return parser


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)

    try:
        args.ldro_intervals = [int(k) for k in args.ldro_intervals.split(",") if k.strip()]
    except ValueError:
        parser.error(f"--ldro_intervals must be comma-separated integers, got {args.ldro_intervals!r}.")
    if args.device not in ("cpu", "cuda"):
        parser.error(f"--device must be cpu or cuda, got {args.device!r}.")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda was given but torch sees no CUDA device.")
    if not args.data_dir.is_dir():
        parser.error(f"--data_dir {args.data_dir} was not found: pass a folder of <language>/train.jsonl.gz.")
    for k in args.ldro_intervals:
        if k < 1:
            parser.error(f"--ldro_intervals must be integers >= 1, got {k}.")
        if args.steps % k:
            logger.warning("--steps %d is not a multiple of k=%d: the timed window does not hold a "
                           "whole number of refresh periods.", args.steps, k)
    return args


# ---- data ---------------------------------------------------------------------------------------


def read_documents(path: Path, count: int) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    documents = []
    with opener(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            documents.append(json.loads(line)["text"])
            if len(documents) == count:
                break
    return documents


def training_examples(args: argparse.Namespace, tokenizer) -> tuple[list[str], list[dict[str, Any]]]:
    """Return the task names and every example of the run, read once from a task-stratified stream."""
    languages = sorted(path.name for path in args.data_dir.iterdir() if (path / "train.jsonl.gz").is_file())
    if len(languages) < args.num_tasks:
        raise SystemExit(f"{args.data_dir} has {len(languages)} languages, fewer than --num_tasks {args.num_tasks}.")
    languages = languages[: args.num_tasks]
    sources = {
        name: InMemorySource(name, read_documents(args.data_dir / name / "train.jsonl.gz", DOCUMENTS_PER_LANGUAGE))
        for name in languages
    }
    stream = TaskStratifiedStream(sources, tokenizer, args.block_size, args.batch_size, task_names=languages,
                                  rank=0, world_size=1)
    total = (args.warmup_steps + args.steps) * args.batch_size
    examples = []
    for example in stream:
        examples.append(example)
        if len(examples) == total:
            break
    return languages, examples


class FixedExamples(IterableDataset):
    """The same examples, in the same order, for every configuration."""

    def __init__(self, examples: list[dict[str, Any]], keep_task_ids: bool):
        self.examples = examples if keep_task_ids else [
            {key: value for key, value in example.items() if key != "task_ids"} for example in examples
        ]

    def __iter__(self):
        return iter(self.examples)


# ---- measurement --------------------------------------------------------------------------------


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def reset_peak_memory(device: str) -> None:
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    else:
        # Writing 5 to clear_refs resets the process's peak resident set size (VmHWM), Linux >= 4.0.
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")


def peak_memory_mb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024


def timed_refreshes(trainer: LDROTrainer, device: str, first_step: int) -> list[tuple[float, float]]:
    """Wrap `trainer.refresh_interaction` to record the (wall, CPU) seconds of each call.

    Calls before optimizer step `first_step` (the warm-up, including the first refresh, which
    allocates the gradient buffer) are not recorded.
    """
    durations: list[tuple[float, float]] = []
    refresh = trainer.refresh_interaction

    def refresh_and_time(model, inputs):
        synchronize(device)
        started_at = (time.perf_counter(), time.process_time())
        refresh(model, inputs)
        synchronize(device)
        if trainer.state.global_step >= first_step:
            durations.append((time.perf_counter() - started_at[0], time.process_time() - started_at[1]))

    trainer.refresh_interaction = refresh_and_time
    return durations


def build_model(args: argparse.Namespace, vocab_size: int) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=vocab_size, n_positions=args.block_size, n_embd=args.n_embd,
                        n_layer=args.n_layer, n_head=max(1, args.n_embd // 32), bos_token_id=1,
                        eos_token_id=1, pad_token_id=0)
    return GPT2LMHeadModel(config)


def training_arguments(args: argparse.Namespace, output_dir: Path, max_steps: int) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=args.batch_size,
        max_steps=max_steps,
        learning_rate=1e-3,
        logging_steps=50,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=args.device == "cpu",
        bf16=args.bf16,
        seed=0,
        dataloader_drop_last=True,
    )


def ldro_arguments(name: str) -> LDROArguments:
    if name == "static":
        return LDROArguments(method="static", mixing_alpha=0.0)
    if name == "dro":
        return LDROArguments(method="dro", dro_eta=1e-2)
    interval = int(name.removeprefix("ldro_k"))
    return LDROArguments(method="ldro", ldro_eta=1e-2, ldro_lookahead_lr=1e-2, ldro_update_interval=interval)


def build_trainer(name: str, args, task_names, examples, vocab_size, output_dir: Path, max_steps: int):
    """Return the trainer of one configuration and the list its refresh times will go to."""
    model = build_model(args, vocab_size)
    training_args = training_arguments(args, output_dir / name, max_steps)
    if name == "trainer":
        trainer = Trainer(model, training_args, data_collator=default_data_collator,
                          train_dataset=FixedExamples(examples, keep_task_ids=False))
        return trainer, []
    ldro_args = ldro_arguments(name)
    trainer = LDROTrainer(model, training_args, data_collator=default_data_collator,
                          train_dataset=FixedExamples(examples, keep_task_ids=True),
                          weighting=weighting_from_arguments(ldro_args, task_names), ldro_args=ldro_args)
    return trainer, timed_refreshes(trainer, args.device, args.warmup_steps)


def measure_peak_memory(name: str, args: argparse.Namespace) -> float:
    """Train `name` for `--memory_steps` steps in this process and return its peak memory (MB).

    Run in a fresh process per configuration: memory freed by an earlier configuration may stay
    with the allocator and hide the next one's peak.
    """
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    tokenizer = byte_level_tokenizer()
    task_names, examples = training_examples(args, tokenizer)
    with tempfile.TemporaryDirectory(prefix="overhead_memory_") as scratch:
        trainer, _ = build_trainer(name, args, task_names, examples, len(tokenizer), Path(scratch), args.memory_steps)
        synchronize(args.device)
        reset_peak_memory(args.device)
        trainer.train()
        synchronize(args.device)
        return peak_memory_mb(args.device)


def peak_memory_per_configuration(names: list[str], args: argparse.Namespace) -> dict[str, float]:
    context = multiprocessing.get_context("spawn")
    peaks = {}
    for name in names:
        with context.Pool(1) as pool:
            peaks[name] = pool.apply(measure_peak_memory, (name, args))
        logger.info("peak memory %-10s %6.0f MB", name, peaks[name])
    return peaks


def measure_throughput(names: list[str], args, task_names, examples, vocab_size) -> dict[str, list[dict[str, Any]]]:
    """Train all configurations `--repeats` times, interleaved step by step; return per-run timings."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    tokens = args.steps * args.batch_size * args.block_size
    window = slice(args.warmup_steps, args.warmup_steps + args.steps)
    for repeat in range(args.repeats):
        # Rotate the order so that no configuration always runs first or after the same one.
        order = names[repeat % len(names):] + names[: repeat % len(names)]
        with tempfile.TemporaryDirectory(prefix="overhead_") as scratch:
            built = {name: build_trainer(name, args, task_names, examples, vocab_size, Path(scratch),
                                         args.warmup_steps + args.steps) for name in order}
            clocks = train_interleaved({name: trainer for name, (trainer, _) in built.items()},
                                       synchronize=lambda: synchronize(args.device))
        for name in order:
            clock, refreshes = clocks[name], built[name][1]
            seconds, cpu_seconds = sum(clock.step_seconds[window]), sum(clock.step_cpu_seconds[window])
            run = {
                "tokens_per_s": tokens / seconds,
                "tokens_per_cpu_s": tokens / cpu_seconds,
                "step_ms": 1e3 * statistics.median(clock.step_seconds[window]),
                "step_cpu_ms": 1e3 * statistics.median(clock.step_cpu_seconds[window]),
                "refresh_ms": [1e3 * wall for wall, _ in refreshes],
                "refresh_cpu_ms": [1e3 * cpu for _, cpu in refreshes],
            }
            runs[name].append(run)
            logger.info("repeat %d/%d %-10s %8.0f tokens/s %8.0f tokens/CPU-s  median step %6.1f ms%s",
                        repeat + 1, args.repeats, name, run["tokens_per_s"], run["tokens_per_cpu_s"],
                        run["step_ms"],
                        f"  refresh {statistics.median(run['refresh_ms']):.1f} ms" if run["refresh_ms"] else "")
        logger.info("repeat %d/%d done, load average %s", repeat + 1, args.repeats, load_average())
    return runs


def nash_solver_ms(num_tasks: int = NASH_TASKS, games: int = NASH_GAMES) -> dict[str, float]:
    """Time `max_entropy_equilibrium` on random lookahead games L = l 1^T - lambda A.

    A comes from random gradients that share one direction, as tasks of one model do. Returns the
    median, 95th percentile and maximum over the games, in wall-clock and CPU milliseconds.
    """
    generator = np.random.default_rng(0)
    wall, cpu = [], []
    for _ in range(games):
        shared = generator.normal(size=(1, 256))
        gradients = 0.5 * shared + generator.normal(size=(num_tasks, 256))
        interaction = interaction_matrix(torch.from_numpy(gradients)).numpy()
        losses = generator.uniform(2.0, 5.0, size=num_tasks)
        lookahead = losses[:, None] - 0.1 * interaction
        started_at = (time.perf_counter(), time.process_time())
        max_entropy_equilibrium(lookahead)
        wall.append(1e3 * (time.perf_counter() - started_at[0]))
        cpu.append(1e3 * (time.process_time() - started_at[1]))
    return {
        "median": statistics.median(wall),
        "p95": float(np.percentile(wall, 95)),
        "max": max(wall),
        "cpu_median": statistics.median(cpu),
        "cpu_p95": float(np.percentile(cpu, 95)),
        "cpu_max": max(cpu),
        "games": games,
    }


# ---- report -------------------------------------------------------------------------------------


def load_average() -> list[float] | None:
    """Return the 1, 5 and 15 minute load averages (Linux), or None."""
    path = Path("/proc/loadavg")
    return [float(value) for value in path.read_text().split()[:3]] if path.exists() else None


def machine_description(device: str) -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"model name\s*:\s*(.+)", cpuinfo)
    memory = re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()) if Path("/proc/meminfo").exists() else None
    description = {
        "cpu": model.group(1).strip() if model else platform.processor(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gb": round(int(memory.group(1)) / 2**20, 1) if memory else None,
        "torch": torch.__version__,
        "load_average_at_start": load_average(),
    }
    if device == "cuda":
        description["gpu"] = torch.cuda.get_device_name()
    return description


def paired_ratios(runs: list[dict[str, Any]], baseline_runs: list[dict[str, Any]], key: str) -> list[float]:
    """Return run / baseline of `key` for each repeat: runs of one repeat saw the same load."""
    return [run[key] / baseline[key] for run, baseline in zip(runs, baseline_runs)]


def summarise(runs: dict[str, list[dict[str, Any]]], peaks: dict[str, float], nash: dict[str, float], args,
              machine) -> dict[str, Any]:
    """Reduce the repeats to medians; ratios are medians of the per-repeat ratios."""
    baseline_runs = runs["trainer"]
    configurations = []
    for name, name_runs in runs.items():
        wall_ratios = paired_ratios(name_runs, baseline_runs, "tokens_per_s")
        cpu_ratios = paired_ratios(name_runs, baseline_runs, "tokens_per_cpu_s")
        configurations.append({
            "name": name,
            "tokens_per_s": statistics.median(run["tokens_per_s"] for run in name_runs),
            "ratio_to_trainer": statistics.median(wall_ratios),
            "ratio_per_repeat": wall_ratios,
            "tokens_per_cpu_s": statistics.median(run["tokens_per_cpu_s"] for run in name_runs),
            "cpu_ratio_to_trainer": statistics.median(cpu_ratios),
            "cpu_ratio_per_repeat": cpu_ratios,
            "step_ms": statistics.median(run["step_ms"] for run in name_runs),
            "step_cpu_ms": statistics.median(run["step_cpu_ms"] for run in name_runs),
            "peak_memory_mb": peaks.get(name),
        })

    # Refresh cost per repeat, against the plain Trainer's step in the same repeat (same load).
    refresh_ms, refresh_steps, refresh_cpu_ms, refresh_cpu_steps = [], [], [], []
    for repeat, baseline in enumerate(baseline_runs):
        wall = [ms for name_runs in runs.values() for ms in name_runs[repeat]["refresh_ms"]]
        cpu = [ms for name_runs in runs.values() for ms in name_runs[repeat]["refresh_cpu_ms"]]
        if wall:
            refresh_ms.append(statistics.median(wall))
            refresh_steps.append(refresh_ms[-1] / baseline["step_ms"])
            refresh_cpu_ms.append(statistics.median(cpu))
            refresh_cpu_steps.append(refresh_cpu_ms[-1] / baseline["step_cpu_ms"])
    result = {
        "configurations": configurations,
        "refresh_ms": statistics.median(refresh_ms) if refresh_ms else None,
        "refresh_cost_in_steps": statistics.median(refresh_steps) if refresh_steps else None,
        "refresh_cost_in_steps_per_repeat": refresh_steps,
        "refresh_cpu_ms": statistics.median(refresh_cpu_ms) if refresh_cpu_ms else None,
        "refresh_cpu_cost_in_steps": statistics.median(refresh_cpu_steps) if refresh_cpu_steps else None,
        "refresh_cpu_cost_in_steps_per_repeat": refresh_cpu_steps,
        "nash_40x40_ms": nash["median"],
        "nash_40x40": nash,
        "settings": {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()},
        "machine": machine,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    return result


def print_table(result: dict[str, Any]) -> None:
    print(f"{'configuration':<14} {'tokens/s':>9} {'ratio':>6} {'CPU ratio':>9} {'step ms':>8} "
          f"{'CPU ms':>7} {'peak MB':>8}  wall ratio per repeat")
    for entry in result["configurations"]:
        repeats = " ".join(f"{ratio:.3f}" for ratio in entry["ratio_per_repeat"])
        print(f"{entry['name']:<14} {entry['tokens_per_s']:>9.0f} {entry['ratio_to_trainer']:>6.3f} "
              f"{entry['cpu_ratio_to_trainer']:>9.3f} {entry['step_ms']:>8.1f} {entry['step_cpu_ms']:>7.1f} "
              f"{entry['peak_memory_mb'] or float('nan'):>8.0f}  {repeats}")
    if result["refresh_ms"] is not None:
        print(f"interaction refresh: {result['refresh_ms']:.1f} ms = {result['refresh_cost_in_steps']:.2f} "
              f"plain steps (CPU time: {result['refresh_cpu_ms']:.1f} ms = "
              f"{result['refresh_cpu_cost_in_steps']:.2f} steps)")
    nash = result["nash_40x40"]
    print(f"exact L-DRO solver, {NASH_TASKS} x {NASH_TASKS}, {nash['games']} games: median "
          f"{nash['median']:.1f} ms, 95th percentile {nash['p95']:.1f} ms, max {nash['max']:.1f} ms "
          f"(CPU time: {nash['cpu_median']:.1f}, {nash['cpu_p95']:.1f}, {nash['cpu_max']:.1f} ms)")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("transformers", "hf_ldro", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = parse_arguments(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    machine = machine_description(args.device)

    tokenizer = byte_level_tokenizer()
    task_names, examples = training_examples(args, tokenizer)
    logger.info("%d tasks, %d examples of %d tokens", len(task_names), len(examples), args.block_size)

    names = ["trainer", "static", "dro"] + [f"ldro_k{k}" for k in args.ldro_intervals]
    runs = measure_throughput(names, args, task_names, examples, len(tokenizer))
    peaks = peak_memory_per_configuration(names, args) if args.memory_steps > 0 else {}
    nash = nash_solver_ms()
    machine["load_average_at_end"] = load_average()

    result = summarise(runs, peaks, nash, args, machine)
    print_table(result)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        logger.info("wrote %s", args.output)
    return result


if __name__ == "__main__":
    main()
