"""The XTREME-R suite (issue 12, item 3): language lists against the official scorer, the aggregate against a hand
computation, the registries' XTREME-R languages on real UD files, and the suite end to end on tiny models: a bare
encoder (retrieval only, every head task skipped with its reason), a run with fine-tuned heads, and a grid.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fastxlt.errors import ConfigError, UnknownLanguageError
from fastxlt.experiments import xtreme_r
from fastxlt.experiments.xtreme_r import (
    SuiteOptions, combine_columns, deviations, plan_models, run_suite, xtreme_r_score,
)
from fastxlt.tasks import languages as langs
from fastxlt.tasks.base import get_task

# google-research/xtreme evaluate.py @ 838c13b69daafb9328785d16caae2711e4012123, XTREME_R_TASK2LANGS, copied as written.
SCORER = {
    "xnli": "ar,bg,de,el,en,es,fr,hi,ru,sw,th,tr,ur,vi,zh",
    "panx": "ar,he,vi,id,jv,ms,tl,eu,ml,ta,te,af,nl,en,de,el,bn,hi,mr,ur,fa,fr,it,pt,es,bg,ru,ja,ka,ko,th,sw,yo,my,zh,"
            "kk,tr,et,fi,hu,qu,pl,uk,az,lt,pa,gu,ro",
    "udpos": "af,ar,bg,de,el,en,es,et,eu,fa,fi,fr,he,hi,hu,id,it,ja,kk,ko,mr,nl,pt,ru,ta,te,th,tl,tr,ur,vi,yo,zh,lt,pl,uk,"
             "wo,ro",
    "tatoeba": "ar,he,vi,id,jv,tl,eu,ml,ta,te,af,nl,de,el,bn,hi,mr,ur,fa,fr,it,pt,es,bg,ru,ja,ka,ko,th,sw,zh,kk,tr,et,fi,"
               "hu,az,lt,pl,uk,ro",
    "xcopa": "et,ht,id,it,qu,sw,ta,th,tr,vi,zh",
    "mewslix": "ar,de,en,es,fa,ja,pl,ro,ta,tr,uk",
    "xquad": "en,es,de,el,ru,tr,ar,vi,th,zh,hi,ro",
    "mlqa": "en,es,de,ar,hi,vi,zh",
    "tydiqa": "en,ar,bn,fi,id,ko,ru,sw,te",
}  # fmt: skip


def test_language_lists_are_the_official_scorers():
    for task in xtreme_r.TASKS:
        if task.key == "lareqa":
            assert task.languages == ("ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh")  # XQuAD-R
            continue
        assert set(task.languages) == set(SCORER[task.key].split(",")), task.key
        assert list(task.languages) == sorted(task.languages), task.key
    sizes = {task.key: len(task.languages) for task in xtreme_r.TASKS}
    assert sizes == {"xnli": 15, "xcopa": 11, "udpos": 38, "panx": 48, "xquad": 12, "mlqa": 7, "tydiqa": 9,
                     "tatoeba": 41, "mewslix": 11, "lareqa": 11}  # fmt: skip
    assert len(langs.XTREME_R_ALL) == 50  # "covers 50 typologically diverse languages"
    assert set(langs.XTREME_R_ALL) - set(langs.XTREME_ALL) == {"az", "gu", "ht", "lt", "pa", "pl", "qu", "ro", "uk", "wo"}
    assert {task.key for task in xtreme_r.TASKS}.isdisjoint({"pawsx", "bucc2018"})  # dropped by XTREME-R
    assert xtreme_r.CATEGORIES == {
        "classification": ("xnli", "xcopa"), "structured_prediction": ("udpos", "panx"),
        "question_answering": ("xquad", "mlqa", "tydiqa"), "retrieval": ("tatoeba", "mewslix", "lareqa"),
    }  # fmt: skip


def test_registries_take_xtreme_r_languages_by_name_while_all_stays_xtreme():
    udpos, panx = get_task("udpos"), get_task("panx")
    assert udpos.resolve_languages("all") == list(langs.UDPOS) and len(langs.UDPOS) == 33
    assert panx.resolve_languages("all") == list(langs.PANX) and len(langs.PANX) == 40
    assert udpos.resolve_languages(list(langs.XTREME_R_UDPOS)) == list(langs.XTREME_R_UDPOS)
    assert panx.resolve_languages(list(langs.XTREME_R_PANX)) == list(langs.XTREME_R_PANX)
    with pytest.raises(UnknownLanguageError, match="task 'udpos' has no language 'qu'"):
        udpos.check_language("qu")  # a PAN-X addition, not a UD-POS one


def test_real_ud_test_files_of_the_xtreme_r_languages(shared_data):
    # sentences / tokens of each language's test treebanks, from ../shared/data/MANIFEST.md (lt = ALKSNIS + HSE)
    expected = {"lt": (684 + 55, 10846 + 1060), "pl": (1727, 13112), "ro": (729, 16324), "uk": (892, 17116),
                "wo": (470, 10403)}  # fmt: skip
    udpos = get_task("udpos")
    for language, (sentences, tokens) in expected.items():
        examples = udpos.load("test", language, shared_data / "ud")
        assert (len(examples), sum(len(e.words) for e in examples)) == (sentences, tokens), language


# ------------------------------------------------------------------------------------------ the score


def test_aggregate_equals_a_hand_computation_on_a_made_up_table():
    table = {"xnli": 80.0, "xcopa": 60.0, "udpos": 70.0, "panx": 50.0, "xquad": 65.0, "mlqa": 55.0, "tydiqa": 45.0,
             "tatoeba": 90.0, "mewslix": 30.0, "lareqa": 20.0}  # fmt: skip
    result = xtreme_r_score(table)
    # by hand: tasks (80+60+70+50+65+55+45+90+30+20)/10 = 565/10; categories 70, 60, 55, 140/3
    assert result["score"] == pytest.approx(56.5)
    assert {name: c["score"] for name, c in result["categories"].items()} == pytest.approx(
        {"classification": 70.0, "structured_prediction": 60.0, "question_answering": 55.0, "retrieval": 140 / 3})
    assert result["category_mean"] == pytest.approx((70 + 60 + 55 + 140 / 3) / 4)
    assert result["missing"] == []
    partial = xtreme_r_score({**table, "mewslix": None, "lareqa": None})  # e.g. no Mewsli-X data, no LAReQA
    assert partial["score"] == pytest.approx(515 / 8)
    assert partial["categories"]["retrieval"] == {"score": 90.0, "tasks": ["tatoeba"], "missing": ["mewslix", "lareqa"]}
    assert partial["missing"] == ["mewslix", "lareqa"]
    assert xtreme_r_score({})["score"] is None
    with pytest.raises(ConfigError, match="not XTREME-R tasks: pawsx"):
        xtreme_r_score({"pawsx": 80.0})


def test_deviations_name_the_scorers_problems_and_everything_skipped():
    tasks = {
        "xquad": {"languages": {"en": 1.0, "ro": 2.0}, "skipped_languages": {}},
        "udpos": {"languages": {"en": 1.0, "wo": 2.0}, "skipped_languages": {"kk": "no test file"}},
    }
    lines = deviations(tasks, {"mewslix": "no data"})
    text = "\n".join(lines)
    assert "XTREME_R_TASK2LANGS['lareqa'] = []" in text
    assert "xquad: ro is scored; download_data.sh does not fetch it" in text
    assert "udpos: wo is scored; train_udpos.sh never predicts it" in text
    assert "mewslix: not scored (no data)" in lines
    assert "udpos kk: not scored (no test file); udpos is averaged over the languages it has" in lines
    assert lines[-1].startswith("overall score over 2 of 10 tasks (missing: xnli, xcopa, panx, mlqa, tydiqa, tatoeba")


# ------------------------------------------------------------------------------------------ the suite


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


TATOEBA_DE = ["Ich bin müde.", "Das Haus ist groß.", "Wo ist der Bahnhof?", "Er liest ein Buch.", "Wir essen Brot."]
TATOEBA_EN = ["I am tired.", "The house is big.", "Where is the station?", "He reads a book.", "We eat bread."]


def write_data_root(root: Path) -> Path:
    """Small files in each task's published layout: Tatoeba (LASER) de and ro, XNLI (XTREME tsv) en and de with
    labels, UD (CoNLL-U) en and wo, PAN-X (XTREME tsv) with its test tags stripped."""
    write(root / "tatoeba" / "tatoeba.deu-eng.deu", "\n".join(TATOEBA_DE) + "\n")
    write(root / "tatoeba" / "tatoeba.deu-eng.eng", "\n".join(TATOEBA_EN) + "\n")
    write(root / "tatoeba" / "tatoeba.ron-eng.ron", "Sunt obosit.\nCasa este mare.\n")
    write(root / "tatoeba" / "tatoeba.ron-eng.eng", "I am tired.\nThe house is big.\n")
    pairs = [("a b c", "a b", "entailment"), ("c d", "e f", "contradiction"), ("g h", "g h i", "neutral")] * 4
    for language in ("en", "de"):
        write(root / "xnli" / f"test-{language}.tsv", "".join(f"{a}\t{b}\t{label}\n" for a, b, label in pairs))
    row = "{i}\t{w}\t_\t{t}\t_\t_\t0\t_\t_\t_\n"
    sentence = "".join(row.format(i=i + 1, w=w, t=t) for i, (w, t) in enumerate([("Dogs", "NOUN"), ("bark", "VERB"), (".", "PUNCT")]))
    write(root / "ud" / "UD_English-X" / "en_x-ud-test.conllu", f"# sent_id = 1\n{sentence}\n" * 3)
    write(root / "ud" / "UD_Wolof-X" / "wo_x-ud-test.conllu", f"# sent_id = 1\n{sentence}\n" * 2)
    write(root / "panx" / "test-en.tsv", "Paris\nis\nnice\n\nBerlin\n")  # XTREME strips the test tags
    return root


def reference_tatoeba_accuracy(encoder_dir: Path, layer: int) -> float:
    """Nearest English neighbour by cosine of mean-pooled hidden state ``layer``, one sentence at a time (no padding)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(encoder_dir), AutoModel.from_pretrained(encoder_dir).eval()

    def embed(sentence: str) -> np.ndarray:
        with torch.no_grad():
            encoded = tokenizer(sentence, return_tensors="pt")
            vector = model(**encoded, output_hidden_states=True).hidden_states[layer][0].mean(dim=0).numpy()
        return vector / np.linalg.norm(vector)

    source = np.stack([embed(s) for s in TATOEBA_DE])
    english = np.stack([embed(s) for s in TATOEBA_EN])
    return 100.0 * float(np.mean((source @ english.T).argmax(axis=1) == np.arange(len(TATOEBA_DE))))


def test_a_bare_encoder_runs_retrieval_and_lists_every_head_task_as_skipped(tiny_encoder, tmp_path):
    data = write_data_root(tmp_path / "data")
    result = run_suite(tiny_encoder, data, tmp_path / "out", SuiteOptions())
    (column,) = result["columns"].values()
    tatoeba = column["tasks"]["tatoeba"]
    assert set(tatoeba["languages"]) == {"de", "ro"}
    assert set(tatoeba["skipped_languages"]) == set(langs.XTREME_R_TATOEBA) - {"de", "ro"}
    assert "tatoeba.pol-eng.pol" in tatoeba["skipped_languages"]["pl"]
    layer = tatoeba["details"]["layer"]
    assert layer == round(14 / 24 * 2)  # XTREME's layer 14 of 24, at the same depth of a 2-layer encoder
    assert tatoeba["languages"]["de"] == pytest.approx(reference_tatoeba_accuracy(tiny_encoder, layer))
    skipped = column["skipped_tasks"]
    assert skipped["xnli"].startswith("no fine-tuned head (a 'nli' head from a target phase on xnli); test files for 2/15")
    assert skipped["udpos"].endswith("test files for 2/38 languages")
    assert skipped["mlqa"].startswith("no fine-tuned head")
    assert "mewsli_x/" in skipped["mewslix"] or skipped["mewslix"].startswith("not available")
    scored = {key: task["score"] for key, task in column["tasks"].items()}
    assert column["score"] == pytest.approx(np.mean(list(scored.values())))
    assert column["categories"]["retrieval"]["score"] == pytest.approx(column["score"])  # only retrieval ran
    assert f"xnli: not scored ({skipped['xnli']})" in column["deviations"]
    assert json.loads(Path(result["output_file"]).read_text())["columns"] == json.loads(json.dumps(result["columns"]))
    table = xtreme_r.format_suite(result)
    assert "tatoeba" in table and "skipped (" in table and "deviations from the official score" in table


@pytest.fixture(scope="module")
def headed_run(tmp_path_factory, synthetic_model) -> Path:
    """A run directory as `fastxlt run` leaves it (a grid of one arm, ``none``, its target phase in the run's own
    store), whose final model has (untrained) xnli, udpos and panx heads."""
    import torch

    from fastxlt.models.encoder import load_encoder, load_tokenizer
    from fastxlt.models.transfer import TransferModel, save_phase_outputs
    from fastxlt.synthetic.model import build_tiny_encoder

    root = tmp_path_factory.mktemp("xtreme-r-run")
    tokenizer = load_tokenizer(synthetic_model)
    pretrained = root / "pretrained-encoder"
    build_tiny_encoder(tokenizer, seed=7, out_dir=pretrained, hidden_size=32, num_layers=2, num_heads=2,
                       intermediate_size=64, max_length=128, dropout=0.0)  # fmt: skip
    tokenizer.save_pretrained(pretrained)
    torch.manual_seed(0)
    model = TransferModel(load_encoder(pretrained), [get_task("xnli"), get_task("udpos"), get_task("panx")])
    run = root / "run"
    save_phase_outputs(model, run / "store" / "target" / "k0" / "model", tokenizer)
    cell = {"cell_id": "intermediate=none", "axes": {"intermediate": "none"}, "phase_keys": {"target": "k0"},
            "store": str(run / "store"), "pretrained": str(pretrained)}
    write(run / "cells" / "intermediate=none" / "cell.json", json.dumps(cell))
    write(run / "cells" / "intermediate=none" / "config.yaml", f"model: {{name_or_path: {pretrained}}}\n")
    write(run / "grid.json", json.dumps({"cells": ["intermediate=none"]}))
    return run


def test_a_run_with_heads_scores_its_tasks_over_the_languages_with_gold(headed_run, tmp_path):
    data = write_data_root(tmp_path / "data")
    result = run_suite(headed_run, data, tmp_path / "out", SuiteOptions(max_examples=10))
    column = result["columns"]["none"]
    assert column["tasks"]["tatoeba"]["source"].endswith("pretrained-encoder")  # the encoder before target training
    xnli = column["tasks"]["xnli"]
    assert set(xnli["languages"]) == {"en", "de"}
    assert xnli["skipped_languages"]["fr"].startswith("no test file")
    for language in ("en", "de"):  # accuracy recomputed from the predictions written per language
        saved = json.loads((tmp_path / "out" / "none" / "xnli" / "eval" / "none" / "xnli" / f"{language}.json").read_text())
        gold = [{"entailment": 0, "neutral": 1, "contradiction": 2}[label] for label in ["entailment", "contradiction", "neutral"] * 4][:10]
        assert saved["examples"] == 10  # --max-examples
        assert xnli["languages"][language] == pytest.approx(100.0 * np.mean(np.array(saved["predictions"]) == gold))
    assert xnli["score"] == pytest.approx(np.mean(list(xnli["languages"].values())))
    udpos = column["tasks"]["udpos"]
    assert set(udpos["languages"]) == {"en", "wo"}
    assert any(line.startswith("udpos: wo is scored") for line in column["deviations"])
    # PAN-X: a head and a test file, but XTREME stripped the gold tags: skipped with the reason
    assert column["skipped_tasks"]["panx"].startswith("no scorable language: en: its gold is withheld")
    assert column["skipped_tasks"]["xquad"].startswith("no fine-tuned head (a 'squad' head")
    scores = {key: task["score"] for key, task in column["tasks"].items()}
    assert set(scores) == {"xnli", "udpos", "tatoeba"} | ({"lareqa"} & set(scores))
    assert column["score"] == pytest.approx(np.mean(list(scores.values())))
    assert column["categories"]["classification"]["score"] == pytest.approx(xnli["score"])
    assert column["categories"]["structured_prediction"]["score"] == pytest.approx(udpos["score"])


def test_a_grid_groups_cells_that_differ_only_in_their_target(tmp_path, headed_run):
    store = tmp_path / "store"
    grid = tmp_path / "grid"
    model_dir = headed_run / "store" / "target" / "k0" / "model"
    cells = {"intermediate=none,target=xnli": "k1", "intermediate=none,target=udpos": "k2", "intermediate=mnli,target=xnli": "k3"}
    for cell_id, key in cells.items():
        (store / "target" / key).mkdir(parents=True)
        (store / "target" / key / "model").symlink_to(model_dir)
        axes = dict(part.split("=") for part in cell_id.split(","))
        phase_keys = {"target": key, **({"intermediate": "i1"} if axes["intermediate"] != "none" else {})}
        axes["seed"] = "1"  # the same in every cell: left out of the column names
        record = {"cell_id": cell_id, "axes": axes, "phase_keys": phase_keys, "store": str(store)}
        write(grid / "cells" / cell_id / "cell.json", json.dumps(record))
        write(grid / "cells" / cell_id / "config.yaml", "model: {name_or_path: xlm-roberta-large}\n")
    write(grid / "grid.json", json.dumps({"cells": [*cells, "intermediate=mnli,target=udpos"]}))  # the last: not run
    columns = {column.name: column for column in plan_models(grid)}
    assert set(columns) == {"intermediate=none", "intermediate=mnli"}
    assert set(columns["intermediate=none"].heads) == {"nli", "udpos", "panx"}
    assert columns["intermediate=none"].retrieval_encoder == "xlm-roberta-large"
    assert columns["intermediate=mnli"].retrieval_encoder == str(store / "intermediate" / "i1" / "model" / "encoder")
    both = [column.name for column in combine_columns([str(grid), str(headed_run)])]  # --model A,B: side by side
    assert both == ["intermediate=none", "intermediate=mnli", "none"]
    assert [column.name for column in combine_columns([str(headed_run), str(headed_run)])] == ["none", "run:none"]


def test_the_suite_on_the_command_line_needs_a_data_root(tiny_encoder, capsys):
    from fastxlt.cli import eval_main

    assert eval_main(["--suite", "xtreme-r", "--model", str(tiny_encoder)]) == 2
    assert "pass --data-root DIR" in capsys.readouterr().err
    assert eval_main(["--suite", "xtreme-r", "--model", str(tiny_encoder), "--data-root", "/nonexistent"]) == 2
    assert "data root '/nonexistent' does not exist" in capsys.readouterr().err


def test_the_suite_runs_only_the_tasks_named_and_refuses_an_unknown_one(tiny_encoder, tmp_path, capsys):
    """``--task tatoeba`` (a grid whose XNLI and XCOPA scores its own cells already hold): only Tatoeba runs,
    with the score it has in the whole suite; every other task is listed as skipped, not silently dropped."""
    from fastxlt.cli import eval_main

    data = write_data_root(tmp_path / "data")
    result = run_suite(tiny_encoder, data, tmp_path / "out", SuiteOptions(tasks=("tatoeba",)))
    (column,) = result["columns"].values()
    assert set(column["tasks"]) == {"tatoeba"}
    assert set(column["skipped_tasks"]) == {task.key for task in xtreme_r.TASKS} - {"tatoeba"}
    assert set(column["skipped_tasks"].values()) == {"not in --task"}
    layer = column["tasks"]["tatoeba"]["details"]["layer"]
    assert column["tasks"]["tatoeba"]["languages"]["de"] == pytest.approx(reference_tatoeba_accuracy(tiny_encoder, layer))
    assert column["score"] == pytest.approx(column["tasks"]["tatoeba"]["score"])
    with pytest.raises(ConfigError, match=r"--task tatoba: not an XTREME-R task; the tasks are xnli, xcopa"):
        SuiteOptions(tasks=("tatoeba", "tatoba"))
    arguments = ["--suite", "xtreme-r", "--model", str(tiny_encoder), "--data-root", str(data), "--task", "udpos,xquad"]
    assert eval_main([*arguments, "--output", str(tmp_path / "cli")]) == 0
    saved = json.loads((tmp_path / "cli" / "xtreme-r.json").read_text())
    (column,) = saved["columns"].values()
    assert column["tasks"] == {} and saved["options"]["tasks"] == ["udpos", "xquad"]
    assert column["skipped_tasks"]["udpos"].startswith("no fine-tuned head") and column["skipped_tasks"]["xnli"] == "not in --task"
    capsys.readouterr()
