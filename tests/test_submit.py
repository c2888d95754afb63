"""``fastxlt submit``: a tiny grid through submitit's LocalExecutor in 2 jobs ends with the scores of one process;
the SLURM path through submitit's own mocked sbatch (the script and the pickled call it would run); resubmission
runs only the missing cells; bad input gives one line."""

from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fastxlt.errors import ConfigError
from fastxlt.experiments import submit
from fastxlt.utils.io import read_json, write_json_atomic
from test_grid import cell_scores

pytest.importorskip("submitit")

REPO = Path(__file__).resolve().parents[1]
BASE = {
    "name": "toy-grid", "seed": 5, "kernels": "none",
    "optimization": {"lr": 5.0e-4, "batch_size": 16, "grad_accum": 1, "max_length": 32, "max_steps": 4,
                     "eval_batch_tokens": 4096, "checkpoint_every": 1},
    "phases": {
        "intermediate": {"tasks": ["synth-nli"], "train_examples": 64},
        "target": {"tasks": ["synth-para"]},
        "evaluate": {"languages": ["en", "xa"], "split": "validation"},
    },
}  # fmt: skip
AXES = {"intermediate": ["none", "synth-nli"], "target_size": [24, 48]}  # 4 cells; 2 share one intermediate phase


def write_grid(root: Path, model: Path, name: str) -> Path:
    data = copy.deepcopy(BASE) | {"run_dir": str(root / name), "model": {"name_or_path": str(model)},
                                  "grid": {"axes": AXES, "store": str(root / f"{name}-store")}}  # fmt: skip
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "COLUMNS": "160",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}  # fmt: skip
    result = subprocess.run([sys.executable, "-m", "fastxlt.cli", *args], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, f"{args}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def test_local_submission_in_two_jobs_equals_one_process(tmp_path, synthetic_model):
    cli("run", "--config", str(write_grid(tmp_path, synthetic_model, "one")))
    config = write_grid(tmp_path, synthetic_model, "jobs")
    out = cli("submit", "--config", str(config), "--cluster", "local", "--jobs", "2", "--wait",
              "--set", "logging.report_to=[tensorboard]").stdout  # curves on: operational, the same phase keys
    assert "submitted 2 local job(s) for 4 pending cell(s)" in out and f"fastxlt status {tmp_path / 'jobs'}" in out
    assert cell_scores(tmp_path / "jobs") == cell_scores(tmp_path / "one")
    assert len(list((tmp_path / "jobs-store" / "intermediate").glob("*/phase.json"))) == 1  # trained once, shared
    assert (tmp_path / "jobs" / "results.csv").is_file()
    curves = sorted(path.name for path in (tmp_path / "jobs" / "figures").glob("curve_*.png"))
    assert len(curves) == 1 + 4 and curves[0].startswith("curve_intermediate_")  # each shared phase once
    # every phase's events under its store directory, the run named by kind, key and the cell that trained it
    for cell in (tmp_path / "jobs" / "cells").iterdir():
        for kind, key in read_json(cell / "cell.json")["phase_keys"].items():
            (run,) = (tmp_path / "jobs-store" / kind / key / "tensorboard").iterdir()
            assert run.name.startswith(f"{kind}_{key}_") and list(run.glob("events.out.tfevents.*"))
    one_keys = sorted(read_json(c / "cell.json")["phase_keys"].items() for c in (tmp_path / "one" / "cells").iterdir())
    assert sorted(read_json(c / "cell.json")["phase_keys"].items() for c in (tmp_path / "jobs" / "cells").iterdir()) == one_keys
    again = cli("submit", "--config", str(config), "--cluster", "local", "--jobs", "2").stdout
    assert "nothing to submit: 4 cell(s) done" in again


def test_slurm_array_script_and_resubmission_of_missing_cells(tmp_path, synthetic_model):
    from submitit.slurm.test_slurm import mocked_slurm

    config = write_grid(tmp_path, synthetic_model, "slurm")
    options = submit.ClusterOptions(cluster="slurm", jobs=2, time_min=submit.parse_time("2:00:00"), gpus_per_node=1,
                                    cpus_per_task=8, mem_gb=64, partition="gpu", account="xlt",
                                    setup=["source .venv/bin/activate"], sbatch={"mail-type": "END"})  # fmt: skip
    with mocked_slurm():
        submission = submit.submit_grid(config, [], options)
    assert [job.job_id for job in submission.jobs] == ["12_0", "12_1"]
    assert sorted(sum(submission.shards, [])) == sorted(read_json(tmp_path / "slurm" / "grid.json")["cells"])
    (script_file,) = (tmp_path / "slurm" / "submitit").glob("*/*_submission.sh")  # one sbatch for the array
    script = script_file.read_text()
    for line in ("#SBATCH --array=0-1%2", "#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1", "#SBATCH --time=120",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --mem=64GB", "#SBATCH --account=xlt", "#SBATCH --mail-type=END",
                 "#SBATCH --job-name=fastxlt-toy-grid", "#SBATCH --ntasks-per-node=1", "source .venv/bin/activate"):
        assert line in script.splitlines(), line
    assert "-m submitit.core._submit" in script and str(tmp_path / "slurm" / "submitit") in script
    # what each array task will call: run_cells(config, overrides, its cells), requeued with the same on a timeout
    calls = [pickle.loads(job.paths.submitted_pickle.read_bytes()) for job in submission.jobs]
    assert all(isinstance(call.function, submit.RunCells) for call in calls)
    assert [call.args for call in calls] == [(str(config.resolve()), [], shard) for shard in submission.shards]
    requeued = calls[1]._checkpoint_function()  # what submitit's USR2 handler dumps before requeuing
    assert requeued.function is calls[1].function and requeued.args == calls[1].args
    # one cell finished, one failed: a resubmission deals only the three without results.json
    done = submission.shards[0][0]
    finished = {"arms": {"baseline": {"tasks": {"synth-para": {"metric": "accuracy", "languages": {"en": 50.0}}}}}}
    write_json_atomic(tmp_path / "slurm" / "cells" / done / "results.json", finished)
    with mocked_slurm():
        again = submit.submit_grid(config, [], options)
    assert done not in sum(again.shards, []) and len(sum(again.shards, [])) == 3 and again.done == [done]


def test_deal_and_time_parsing():
    assert submit.deal(["a", "b", "c", "d", "e"], 2) == [["a", "c", "e"], ["b", "d"]]
    assert submit.deal(["a"], 8) == [["a"]] and submit.deal([], 3) == []
    assert [submit.parse_time(t) for t in ("90", "1:30", "1:30:00", "1:30:01", "2-00:00:00")] == [90, 90, 90, 91, 2880]
    with pytest.raises(ConfigError, match="--time"):
        submit.parse_time("soon")
    with pytest.raises(ConfigError, match="--sbatch"):
        submit.parse_sbatch(["mail-type"])


@pytest.mark.parametrize("args, expected", [
    (["--cluster", "pbs"], "--cluster 'pbs': unknown cluster; known: slurm, local"),
    (["--cluster", "local", "--partition", "gpu"], "--partition is a SLURM option; it needs --cluster slurm"),
    (["--cluster", "slurm", "--jobs", "0"], "--jobs must be a positive number"),
    (["--cluster", "slurm", "--time", "soon"], "--time 'soon'"),
])  # fmt: skip
def test_bad_submit_input_is_one_line(tmp_path, synthetic_model, capsys, args, expected):
    from fastxlt.cli import main

    config = write_grid(tmp_path, synthetic_model, "bad")
    assert main(["submit", "--config", str(config), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1


def test_missing_submitit_and_non_grid_config(tmp_path, synthetic_model, monkeypatch, capsys):
    from fastxlt.cli import main

    config = write_grid(tmp_path, synthetic_model, "nosub")
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit now raises ImportError
    assert main(["submit", "--config", str(config), "--cluster", "local"]) == 2
    assert "needs the 'submitit' package" in capsys.readouterr().err
    monkeypatch.undo()
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump({k: v for k, v in yaml.safe_load(config.read_text()).items() if k != "grid"}))
    assert main(["submit", "--config", str(plain), "--cluster", "local"]) == 2
    assert "no 'grid' section" in capsys.readouterr().err
    assert main(["submit", "--cluster", "local"]) == 2
    assert "fastxlt submit needs --config GRID" in capsys.readouterr().err
