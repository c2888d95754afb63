"""Every command line, in one package: ``fastxlt`` (run, train, eval, report, perturb, ...), ``fastxlt-eval``, the
DeepSpeed entry point's options (``fastxlt/train.py``), ``--retrieval`` (``fastxlt.cli.retrieval``, options in
``fastxlt.cli.retrieval_options``) and ``--suite xtreme-r`` (``fastxlt.cli.suite``). Argument parsing lives here only;
the packages below take typed arguments. Building a parser imports no torch (``--help`` stays fast): the handlers
import what they run inside their functions.

Errors caused by the user's input (``FastXLTError``) are printed as one line, without a traceback,
and the process exits with status 2; results already written stay where they are.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib import resources
from pathlib import Path
from typing import Callable, Sequence

from fastxlt.cli.retrieval_options import add_retrieval_arguments
from fastxlt.errors import CheckpointError, ConfigError, CorruptDataError, DataNotFoundError, FastXLTError
from fastxlt.experiments.cell_results import is_results_record, start_command
from fastxlt.retrieval.options import RETRIEVAL_MAX_LENGTH
from fastxlt.utils.io import read_json
from fastxlt.utils.run_layout import RESULTS_CSV, RESULTS_FILENAME, is_grid_dir

DEFAULT_CONFIG = "default.yaml"
# --help is read in a terminal: plain text, not the module docstring's reStructuredText
DESCRIPTION = "fastxlt: English intermediate-task training and zero-shot cross-lingual evaluation"
EVAL_MAX_LENGTH = 256  # = model_eval.DEFAULT_MAX_LENGTH (a test checks); retrieval: fastxlt.retrieval.options
CLI_OUTPUT_DIRNAME = "eval-cli"  # = fastxlt.evaluation.model_eval.CLI_OUTPUT_DIRNAME (a test checks)


def default_config_path() -> Path:
    """The embedded default experiment (the synthetic multilingual world), shipped inside the package."""
    return Path(str(resources.files("fastxlt.synthetic").joinpath(DEFAULT_CONFIG)))


def _load(args: argparse.Namespace):
    from fastxlt.experiments.preflight import load_experiment

    path = args.config or default_config_path()
    overrides = list(args.set or [])
    if getattr(args, "run_dir", None):
        overrides.append(f"run_dir={args.run_dir}")
    return load_experiment(path, overrides)


def cmd_run(args: argparse.Namespace, *, evaluate: bool = True) -> int:
    from rich.console import Console

    from fastxlt.experiments.pipeline import run_experiment
    from fastxlt.reports.run_tables import print_results

    from fastxlt.experiments.grid import has_grid_section

    if has_grid_section(args.config or default_config_path()):
        return _run_grid(args, evaluate=evaluate)
    if getattr(args, "shard", None):
        raise FastXLTError("--shard splits the cells of a grid; this config has no grid section")
    config = _load(args)
    results = run_experiment(config, evaluate=evaluate)
    if results:
        print_results(results, Console())
        Console().print(f"results: {Path(config.run_dir) / RESULTS_FILENAME}")
    return 0


def _run_grid(args: argparse.Namespace, *, evaluate: bool) -> int:
    """A grid file: this shard's cells, then the table and the report of everything done so far."""
    from rich.console import Console

    from fastxlt.experiments.grid import load_grid
    from fastxlt.experiments.grid_runner import grid_status, run_grid
    from fastxlt.reports.grid_table import print_grid

    overrides = list(args.set or []) + ([f"run_dir={args.run_dir}"] if getattr(args, "run_dir", None) else [])
    spec = load_grid(args.config or default_config_path(), overrides)
    console = Console()
    outcome = run_grid(spec, shard=getattr(args, "shard", None), evaluate=evaluate)
    if outcome["skipped"]:
        console.print(f"{len(outcome['skipped'])} cell(s) are running in another process; re-run to pick them up")
    if not evaluate:
        return 0
    states = grid_status(spec.run_dir)
    print_grid(spec.run_dir, console)
    if states["pending"] or states["running"]:
        console.print(f"{len(states['done'])} of {len(spec.cells)} cells done; the table shows those")
    _print_report_files(Path(spec.run_dir), console)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Done / running / pending cells of a grid run directory."""
    from fastxlt.experiments.grid_runner import grid_status

    states = grid_status(args.run_dir)
    total = sum(len(cells) for cells in states.values())
    for state in ("done", "running", "pending"):
        print(f"{state:8s} {len(states[state]):4d} / {total}")
        if args.verbose:
            for cell_id in states[state]:
                print(f"    {cell_id}")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    """Hand a grid's pending cells to submitit (SLURM or local processes) as an array of shard jobs."""
    from rich.console import Console

    from fastxlt.experiments import submit

    if not args.config:
        raise ConfigError("fastxlt submit needs --config GRID: a grid file, e.g. configs/rq/q1-target-size.yaml")
    config = args.config
    overrides = list(args.set or []) + ([f"run_dir={args.run_dir}"] if args.run_dir else [])
    options = submit.ClusterOptions(
        cluster=args.cluster, jobs=args.jobs, time_min=submit.parse_time(args.time), gpus_per_node=args.gpus_per_node,
        cpus_per_task=args.cpus_per_task, mem_gb=args.mem_gb, partition=args.partition, account=args.account,
        constraint=args.constraint, qos=args.qos, array_parallelism=args.array_parallelism, setup=list(args.setup or []),
        sbatch=submit.parse_sbatch(args.sbatch),
    )
    submission = submit.submit_grid(config, overrides, options)
    _print_submission(submission, options)
    if not submission.jobs:
        return 0
    if not args.wait:
        if options.cluster == "local":
            Console().print("local jobs are children of this process: waiting for them (--wait is implied)")
        else:
            return 0
    failures = submit.wait(submission)
    print_grid_outcome(submission.run_dir, Console())
    if failures:
        raise submit.failure_error(failures, len(submission.jobs), config)
    return 0


def _print_submission(submission, options) -> None:
    """Job ids, what each runs, and the command that follows them."""
    if submission.running:
        print(f"{len(submission.running)} cell(s) are running elsewhere; not submitted again")
    if not submission.jobs:
        print(f"nothing to submit: {len(submission.done)} cell(s) done, {len(submission.running)} running")
        return
    cells = sum(len(shard) for shard in submission.shards)
    print(f"submitted {len(submission.jobs)} {options.cluster} job(s) for {cells} pending cell(s) "
          f"({len(submission.done)} already done):")
    for job, shard in zip(submission.jobs, submission.shards):
        print(f"  job {job.job_id}: {len(shard)} cell(s): {', '.join(shard[:3])}{' ...' if len(shard) > 3 else ''}")
    print(f"logs: {submission.run_dir / 'submitit'}")
    print(f"follow: fastxlt status {submission.run_dir} -v")


def print_grid_outcome(run_dir: Path, console) -> None:
    """The grid table and the report files once its jobs have ended."""
    from fastxlt.experiments.grid_runner import grid_status
    from fastxlt.reports.grid_table import print_grid

    states = grid_status(run_dir)
    print_grid(run_dir, console)
    console.print(f"{len(states['done'])} of {sum(map(len, states.values()))} cells done")
    _print_report_files(run_dir, console)


def cmd_train(args: argparse.Namespace) -> int:
    return cmd_run(args, evaluate=not args.no_eval)


def cmd_report(args: argparse.Namespace) -> int:
    from rich.console import Console

    from fastxlt.reports.compare import parse_baseline, parse_contrast, parse_groups
    from fastxlt.reports.run_tables import print_results

    if is_grid_dir(args.run_dir):  # a grid: its table, then the report files
        from fastxlt.reports.grid_table import print_grid

        print_grid(Path(args.run_dir), Console())
        _print_report_files(Path(args.run_dir), Console(), latex=args.latex, groups=parse_groups(args.group),
                            baseline=parse_baseline(args.baseline), contrasts=[parse_contrast(c) for c in args.contrast or []])
        return 0
    path = Path(args.run_dir) / RESULTS_FILENAME
    if not path.is_file():
        raise DataNotFoundError(f"'{path}' not found; run the experiment (fastxlt run --config ...) first")
    try:
        results = read_json(path)
    except (OSError, ValueError) as error:  # ValueError: not JSON, or not UTF-8
        raise CorruptDataError(f"{path} is damaged ({type(error).__name__}); re-run `fastxlt run` with the same "
                               "config: it rewrites results.json from the per-language files under eval/") from None
    _check_results(results, path)
    print_results(results, Console())
    _print_report_files(Path(args.run_dir), Console(), latex=args.latex, groups=parse_groups(args.group),
                        baseline=parse_baseline(args.baseline), contrasts=[parse_contrast(c) for c in args.contrast or []])
    return 0


def _print_report_files(run_dir: Path, console, *, latex: bool = False, groups: dict | None = None,
                        baseline: tuple[str, str] | None = None, contrasts: list | None = None) -> None:
    """Write report.md, results.csv, tables/ and figures/ (``fastxlt.reports``) and print where they are."""
    from fastxlt.reports.build import TABLES_DIRNAME, build_report, conclusion_lines

    report = build_report(run_dir, latex=latex, groups=groups, baseline=baseline, contrasts=contrasts)
    for sentence in conclusion_lines(report):
        console.print(sentence, highlight=False, markup=False)  # settings like "snli [best]" are not markup
    console.print(f"report: {report}\nresults: {run_dir / RESULTS_CSV}")
    for table in sorted((run_dir / TABLES_DIRNAME).glob("*.tex" if latex else "*.md")):
        console.print(f"table: {table}")
    for figure in sorted((run_dir / "figures").glob("*.png")):
        console.print(f"figure: {figure}")


def _check_results(results: object, path: Path) -> None:
    """The shape ``print_results`` reads: {"arms": {arm: {"tasks": {task: {split, metric, languages}}}}}."""

    if not is_results_record(results, needs=("split", "metric", "languages")):
        raise CorruptDataError(f"{path} does not hold fastxlt results (no arms with tasks); re-run `fastxlt run` "
                               "with the same config to rewrite it")


def cmd_plan(args: argparse.Namespace) -> int:
    """Memory per GPU of each training phase (fastxlt/plan.py); imported here so `--help` stays torch-free."""
    from fastxlt.plan import run_plan

    print("\n".join(run_plan(args.config, gpus=args.gpus, nodes=args.nodes, gpu_memory_gb=args.gpu_memory,
                              overrides=args.set)))
    return 0


def check_length_arguments(args: argparse.Namespace) -> None:
    """--batch-tokens and --max-length must be positive: refused here, before any model is loaded."""
    batch_tokens = getattr(args, "batch_tokens", None)
    if batch_tokens is not None and batch_tokens < 1:
        raise ConfigError(f"--batch-tokens must be a positive number of tokens, got {batch_tokens}; "
                          "leave it out for the device's default (2048 on a CPU, 16384 on a GPU)")
    max_length = getattr(args, "max_length", None)
    if max_length is not None and max_length < 1:
        raise ConfigError(f"--max-length must be a positive number of tokens, got {max_length}; "
                          f"leave it out for the default ({EVAL_MAX_LENGTH} for tasks, {RETRIEVAL_MAX_LENGTH} for retrieval)")
    max_examples = getattr(args, "max_examples", None)
    if max_examples is not None and max_examples < 1:
        raise ConfigError(f"--max-examples must be a positive number of examples, got {max_examples}; "
                          "leave it out to evaluate every example")


def cmd_eval(args: argparse.Namespace) -> int:
    """Zero-shot evaluation of a trained model (a run directory or a phase's model directory)."""
    check_length_arguments(args)
    if getattr(args, "suite", None):
        from fastxlt.cli.suite import run_suite_cli

        run_suite_cli(args)
        return 0
    if getattr(args, "retrieval", None):
        from fastxlt.cli.retrieval import run_retrieval

        run_retrieval(args)
        return 0
    from rich.console import Console

    from fastxlt.evaluation.model_eval import evaluate_model
    from fastxlt.reports.run_tables import print_results

    if not args.model or not args.task:
        raise FastXLTError("fastxlt-eval needs --model RUN_OR_DIR and --task NAME (or --retrieval tatoeba|bucc --model M)")
    results = evaluate_model(
        args.model, args.task.split(","), languages=args.languages, split=args.split, data_dir=args.data,
        output=args.output, batch_tokens=args.batch_tokens, max_length=args.max_length,
        backend=args.backend, quantize=args.quantize, precision=args.precision,
        allow_constant_labels=args.allow_constant_labels,
        perturbations=args.perturb, perturbation_seed=args.perturb_seed, muse_dir=args.muse,
        max_examples=args.max_examples,
    )
    print_results(results, Console())
    if args.perturb:
        from fastxlt.reports.perturbation_table import print_perturbations

        print_perturbations(results, Console())
    return 0


def cmd_perturb(args: argparse.Namespace) -> int:
    """Write what the model is scored on under one perturbation: one JSON line per perturbed text."""
    from fastxlt.robustness.dump import coverage_warning, perturb_task
    from fastxlt.robustness.registry import parse_perturbations

    result = perturb_task(args.task, args.data, args.language, args.perturb, args.out, split=args.split,
                          seed=args.seed, max_examples=args.max_examples, muse_dir=args.muse,
                          allow_label_changing=args.allow_label_changing)  # fmt: skip
    line = f"{args.out}: {result['texts']} texts, {result['changed']:.0%} changed, mean edit rate {result['edit_rate']:.3f}"
    if "coverage" in result:
        line += f", mean dictionary coverage {result['coverage']:.3f}"
    print(line)
    warning = coverage_warning(parse_perturbations(args.perturb)[0], args.language, result.get("coverage"))
    if warning:
        print(warning, file=sys.stderr)
    return 0


def _add_perturb_parser(commands) -> None:
    perturb = commands.add_parser("perturb", help="write perturbed evaluation texts (JSON lines) to read them")
    perturb.add_argument("--task", "-t", required=True, help="a pair-classification task (xnli, pawsx)")
    perturb.add_argument("--data", required=True, help="the task's local files in their original layout")
    perturb.add_argument("--language", "-l", required=True)
    perturb.add_argument("--perturb", required=True, metavar="NAME[:STRENGTH]", help="one text perturbation")
    perturb.add_argument("--split", default="test")
    perturb.add_argument("--seed", type=int, default=0)
    perturb.add_argument("--max-examples", type=int, metavar="N", help="the first N examples (two texts each)")
    perturb.add_argument("--out", required=True, metavar="FILE.jsonl")
    perturb.add_argument("--muse", metavar="DIR", help="MUSE folder for code_switch_* (default: muse/ beside --data)")
    perturb.add_argument("--allow-label-changing", action="store_true",
                         help="run a perturbation that can change the task's labels (PAWS-X word order), for analysis")
    perturb.set_defaults(handler=cmd_perturb)


def cmd_truncate(args: argparse.Namespace) -> int:
    """Write the first N layers of an encoder as a model of its own (a depth axis for model-size grids)."""
    from fastxlt.models.truncate import truncate_encoder

    out = truncate_encoder(args.model, args.out, args.layers)
    print(f"{out}: the first {args.layers} layers of {args.model}")
    return 0


def cmd_rekey(args: argparse.Namespace) -> int:
    """Link a phase store's phases under the keys of today's data fingerprints (data copied or remounted)."""
    from fastxlt.experiments.rekey import rekey_store

    outcome = rekey_store(args.store, dry_run=args.dry_run)
    verb = "would link" if args.dry_run else "linked"
    for kind, old, new in outcome.linked:
        print(f"{verb} {kind}/{new} -> {old}")
    for kind, old, new in outcome.taken:
        print(f"kept {kind}/{new} (already there) beside {kind}/{old}")
    for kind, key in outcome.unreadable:
        print(f"skipped {kind}/{key}: its {kind}/{key}/identity.json cannot be read (left as it is)")
    print(f"{args.store}: {len(outcome.linked)} phase(s) {verb} under new keys, {len(outcome.taken)} new key(s) already "
          f"taken, {outcome.already_linked} linked before, {outcome.unchanged} unchanged")
    return 0


def _add_rekey_parser(commands) -> None:
    rekey = commands.add_parser(
        "rekey", help="after data directories were copied or remounted with new modification times (contents "
                      "unchanged), file every stored phase under its key for the data as it is now")  # fmt: skip
    rekey.add_argument("store", help="a phase store directory (a grid's 'store', e.g. runs/rq-cpu/phase-store)")
    rekey.add_argument("--dry-run", action="store_true", help="print what would be linked; change nothing")
    rekey.set_defaults(handler=cmd_rekey)


def _add_truncate_parser(commands) -> None:
    truncate = commands.add_parser("truncate", help="write the first N layers of an encoder as a model of its own")
    truncate.add_argument("--model", "-m", required=True, help="a Hugging Face encoder (BERT / XLM-R family)")
    truncate.add_argument("--layers", type=int, required=True, metavar="N", help="how many layers to keep, from the bottom")
    truncate.add_argument("--out", "-o", required=True, help="output directory")
    truncate.set_defaults(handler=cmd_truncate)


def cmd_export(args: argparse.Namespace) -> int:
    """Export a trained model's task head (or any encoder's embeddings) to ONNX, parity-checked against PyTorch."""
    check_length_arguments(args)
    from rich.console import Console

    from fastxlt.export import export_onnx

    console = Console()
    if args.task:
        from fastxlt.evaluation.model_eval import find_models

        if not Path(args.model).exists():
            raise CheckpointError(f"model path '{args.model}' does not exist; pass a fastxlt run or a phase's model directory")
        models = find_models(Path(args.model))
        targets = [(arm, path, args.out if len(models) == 1 else (Path(args.out) / arm if args.out else None))
                   for arm, path in models.items()]
        for arm, path, out in targets:
            result = export_onnx(path, out, task=args.task, quantize=args.quantize, fp16=args.fp16, data_dir=args.data,
                                 max_length=args.max_length, optimize=args.optimize)
            _print_export(console, arm, result)
        return 0
    layers = [int(part) for part in args.layers.split(",")] if args.layers else None
    result = export_onnx(args.model, args.out, quantize=args.quantize, fp16=args.fp16, layers=layers, pooling=args.pooling,
                         optimize=args.optimize)
    _print_export(console, "embeddings", result)
    return 0


def _print_export(console, name: str, result) -> None:
    parity = result.manifest["parity"]
    state = "reused" if result.reused else "exported"
    console.print(
        f"{name}: {state} {result.graph} ({result.manifest['precision']}; parity on {parity['examples']} examples: "
        f"max abs diff {parity['max_abs']:.2e}, agreement {parity['agreement']:.4f})"
    )


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", help="experiment YAML (default: the embedded synthetic experiment)")
    parser.add_argument("--set", "-s", action="append", metavar="KEY=VALUE", help="override a config field, e.g. seed=3")
    parser.add_argument("--run-dir", help="override run_dir")


def _add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", "-m", help="a fastxlt run directory, a phase's model directory, or (retrieval) any encoder")
    parser.add_argument("--task", "-t", help="task name(s), comma-separated (e.g. xnli)")
    parser.add_argument("--languages", "-l", default="all", help="'all' or a comma-separated list (e.g. de,fr,zh)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--data", help="directory of local files in the task's original layout (default: the hub)")
    parser.add_argument("--output", "-o", help=f"directory for the JSON results (default: <model>/{CLI_OUTPUT_DIRNAME}; "
                                               "retrieval: <model>/eval, or runs/eval/<name> for a hub name)")
    parser.add_argument("--batch-tokens", type=int,
                        help="token budget of a padded batch (default: 2048 on a CPU, 16384 on a GPU)")
    parser.add_argument("--max-length", type=int,
                        help=f"tokens per input (default: {EVAL_MAX_LENGTH}, retrieval: {RETRIEVAL_MAX_LENGTH}; "
                             "either capped by the model's positions)")
    parser.add_argument("--allow-constant-labels", action="store_true",
                        help="score a file whose gold labels are all one value (refused by default: the sign of "
                             "withheld test labels)")
    parser.add_argument("--backend", choices=("torch", "onnx"), default="torch",
                        help="onnx: export each model once (parity-checked) and evaluate with ONNX Runtime")
    parser.add_argument("--quantize", choices=("int8",), help="int8 dynamic quantisation (CPU; with --backend onnx)")
    parser.add_argument("--perturb", metavar="NAME[:STRENGTH][,...]",
                        help="also evaluate under perturbations: char, char_swap, char_drop, char_insert, "
                             "char_substitute, word_order, code_switch_to_en, code_switch_from_en, pgd, pgd_linf "
                             "(e.g. char:0.1,word_order:0.3,pgd:1.0; pair classification)")
    parser.add_argument("--perturb-seed", type=int, default=0, help="seed of the text perturbations (default 0)")
    parser.add_argument("--muse", metavar="DIR", help="MUSE folder with dictionaries/en-XX.txt, for code_switch_*")
    parser.add_argument("--max-examples", type=int, metavar="N",
                        help="evaluate the first N examples of each language (parallel test sets stay parallel)")
    parser.add_argument("--suite", choices=("xtreme-r",),
                        help="every XTREME-R task whose data is under --data-root, with the XTREME-R score and what "
                             "was skipped (sequence tasks need a run or grid with fine-tuned heads; any encoder runs retrieval; "
                             "--model may list several, comma-separated)")
    parser.add_argument("--data-root", metavar="DIR",
                        help="--suite: the folder holding each task's files (xnli/, ud/, panx/, xquad/, tatoeba/, xquad_r/ ...)")
    add_retrieval_arguments(parser)


def _add_submit_parser(commands) -> None:
    submit = commands.add_parser("submit", help="submit a grid to SLURM (or local processes) through submitit, "
                                                "as an array of shard jobs")
    _add_config_arguments(submit)
    submit.add_argument("--cluster", required=True, metavar="slurm|local",
                        help="slurm: sbatch an array job; local: the same jobs as local processes")
    submit.add_argument("--jobs", "-j", type=int, help="array tasks to spread the pending cells over (default: one per cell)")
    submit.add_argument("--wait", action="store_true", help="wait for the jobs, then print the grid table and report")
    submit.add_argument("--time", default="1440", help="wall time per job: minutes, H:MM:SS or D-HH:MM:SS (default 1440)")
    submit.add_argument("--gpus-per-node", type=int, help="GPUs per job")
    submit.add_argument("--cpus-per-task", type=int, help="CPU cores per job")
    submit.add_argument("--mem-gb", type=int, help="memory per job in GB")
    slurm = submit.add_argument_group("SLURM only")
    slurm.add_argument("--partition", help="the SLURM partition")
    slurm.add_argument("--account", help="the SLURM account to charge")
    slurm.add_argument("--constraint", help="node features, e.g. a100")
    slurm.add_argument("--qos", help="quality of service")
    slurm.add_argument("--array-parallelism", type=int, help="at most this many tasks at once (%%N of --array)")
    slurm.add_argument("--setup", action="append", metavar="LINE",
                       help="shell line run before the job, e.g. 'source .venv/bin/activate' (repeatable)")
    slurm.add_argument("--sbatch", action="append", metavar="KEY=VALUE", help="any other #SBATCH option (repeatable)")
    submit.set_defaults(handler=cmd_submit)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastxlt", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command")
    run = commands.add_parser("run", help="run every phase of an experiment (default: the embedded synthetic one)")
    _add_config_arguments(run)
    run.add_argument("--shard", metavar="I/N", help="grids: run every N-th cell starting at the I-th (cluster array jobs)")
    run.set_defaults(handler=cmd_run)
    train = commands.add_parser("train", help="run the training phases in this process (one DeepSpeed rank)")
    _add_config_arguments(train)
    train.add_argument("--no-eval", action="store_true", help="skip zero-shot evaluation after training")
    train.set_defaults(handler=cmd_train)
    evaluate = commands.add_parser("eval", help="zero-shot evaluation of a trained model (same as fastxlt-eval)")
    _add_eval_arguments(evaluate)
    evaluate.set_defaults(handler=cmd_eval)
    export = commands.add_parser("export", help="export a trained model's head (or an encoder's embeddings) to ONNX")
    export.add_argument("--model", "-m", required=True, help="a fastxlt run / phase model directory, or (without --task) any encoder")
    export.add_argument("--task", "-t", help="the task whose head to export; leave out to export sentence embeddings")
    export.add_argument("--out", "-o", help="output directory (default: <model>/onnx/<head>-<precision>)")
    export.add_argument("--quantize", choices=("int8",), help="int8 dynamic quantisation for the CPU")
    export.add_argument("--fp16", action="store_true", help="float16 graph for the CUDA provider")
    export.add_argument("--optimize", action="store_true", help="run ONNX Runtime's BERT-family fusions on the graph")
    export.add_argument("--data", help="the task's local files, for the parity check's examples (default: the hub)")
    export.add_argument("--max-length", type=int, default=256)
    export.add_argument("--layers", help="embeddings: hidden layers, comma-separated (default: the retrieval layer)")
    export.add_argument("--pooling", choices=("mean", "cls"), default="mean", help="embeddings: token pooling")
    export.set_defaults(handler=cmd_export)
    _add_submit_parser(commands)
    status = commands.add_parser("status", help="done / running / pending cells of a grid run directory")
    status.add_argument("run_dir")
    status.add_argument("--verbose", "-v", action="store_true", help="list the cell ids")
    status.set_defaults(handler=cmd_status)
    report = commands.add_parser("report", help="print the tables of a finished run directory")
    report.add_argument("run_dir")
    report.add_argument("--latex", action="store_true", help="also write each table as LaTeX (tables/*.tex, booktabs)")
    report.add_argument("--group", action="append", metavar="NAME=LANG,...",
                        help="a language group: its average and its delta minus the other languages' (repeatable)")
    report.add_argument("--baseline", metavar="AXIS=VALUE",
                        help="compare every cell with the cell that has this value (default: no intermediate phase)")
    report.add_argument("--contrast", action="append", metavar="AXIS=FIRST,SECOND",
                        help="each gain at FIRST minus the gain at SECOND, with its interval (summary_contrast.csv; "
                             "e.g. target_size=250,1000; repeatable)")
    report.set_defaults(handler=cmd_report)
    plan = commands.add_parser("plan", help="GPU memory per training phase for ZeRO 0-3 and the smallest setting that fits")
    plan.add_argument("--config", "-c", required=True, help="experiment or grid YAML (e.g. configs/plan/*.yaml)")
    plan.add_argument("--set", "-s", action="append", metavar="KEY=VALUE", help="override a config field")
    plan.add_argument("--gpus", type=int, default=1, help="GPUs per node (default 1)")
    plan.add_argument("--nodes", type=int, default=1, help="nodes (default 1)")
    plan.add_argument("--gpu-memory", type=float, default=80.0, metavar="GiB",
                      help="memory of one GPU in GiB (default 80; an 80 GB H100 shows 79.6)")
    plan.set_defaults(handler=cmd_plan)
    _add_perturb_parser(commands)
    _add_truncate_parser(commands)
    _add_rekey_parser(commands)
    return parser


def _dispatch(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:

    start_command()
    try:
        return handler(args)
    except FastXLTError as error:
        print(f"fastxlt: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fastxlt: interrupted; finished results and checkpoints are kept, re-run the same command to resume", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # `fastxlt` alone runs the embedded default
        args = parser.parse_args(["run", *(argv or [])])
    return _dispatch(args.handler, args)


def eval_main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = argparse.ArgumentParser(prog="fastxlt-eval", description="zero-shot evaluation of a model over languages")
    _add_eval_arguments(parser)
    return _dispatch(cmd_eval, parser.parse_args(argv))


def train_main(argv: Sequence[str] | None = None, *, prog: str = "fastxlt/train.py", description: str = "") -> int:
    """The DeepSpeed entry point's command line (``deepspeed fastxlt/train.py --config X.yaml``): ``fastxlt train``'s
    options plus the launcher's ``--local_rank``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    _add_config_arguments(parser)
    parser.add_argument("--no-eval", action="store_true", help="skip zero-shot evaluation after training")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    return _dispatch(cmd_train, parser.parse_args(argv))
