"""Bad input stops at the door: through the CLI's main(argv), exit 2, one line `error: ...`, no traceback; and
--verbose / RESNET_EDGE_DEBUG=1 show the cause when asked."""

import dataclasses
import json

import pytest

from pipeline.cli import main
from pipeline.config import Config
from pipeline.core.errors import EdgeError

FAST = ["train_subset=256", "eval_subset=64", "val_size=64", "calib_size=16"]

BAD = [  # (argv, what the one line must say)
    (["train", "model=resnet19"], "model=resnet19: unknown model; choose resnet18"),
    (["summary", "resnet18", "image_size=-5"], "image_size=-5: expected 17 <= image_size <= 4096"),
    (["summary", "resnet19"], "summary resnet19: unknown model"),
    (["summary", "resnet18", "num_classes=0"], "num_classes=0: expected num_classes >= 1"),
    (["train", "lr=-1"], "lr=-1.0: expected 0 < lr <= 10"),
    (["train", "lr=1e9"], "lr=1000000000.0: expected 0 < lr <= 10"),
    (["train", "lr=nan"], "lr=nan: expected 0 < lr <= 10"),
    (["train", "image_size=7"], "image_size=7: stem=imagenet leaves the last stage a single pixel"),
    (["train", "stem=small", "image_size=3"], "image_size=3: stem=small leaves the last stage a single pixel"),
    (["train", "num_classes=3", *FAST], "num_classes=3: the fashion_mnist data has 10 classes"),
    (["train", "in_channels=3", *FAST], "in_channels=3: the fashion_mnist images have 1 channel(s)"),
    (["train", "val_size=70000"], "val_size=70000 must be in 0..59999"),
    (["train", "calib_size=0"], "calib_size=0: expected 1 <= calib_size"),
    (["train", "epochs=-1"], "epochs=-1: expected 0 <= epochs"),
    (["train", "epochs=two"], "epochs=two: expected int"),
    (["train", "batch_size=0"], "batch_size=0: expected 1 <= batch_size"),
    (["train", "width=0"], "width=0.0: expected 0 < width <= 8"),
    (["train", "augment=maybe"], "augment=maybe: expected bool"),
    (["train", "stem=big"], "stem=big: choose imagenet | small"),
    (["train", "data_source=mnist"], "data_source=mnist: choose fashion_mnist | cifar10 | imagefolder"),
    (["train", "optimizer=lion"], "optimizer=lion: choose sgd | adamw"),
    (["train", "preset=tpu"], "preset=tpu: choose auto, cpu, cpu_long, gpu, phone"),
    (["train", "name=../elsewhere"], "name='../elsewhere': expected a non-empty folder name"),
    (["train", "name=.."], "name='..': expected a non-empty folder name"),  # would write into runs_dir's parent
    (["train", "name=."], "name='.': expected a non-empty folder name"),
    (["train", "val_size=0"], "picks its best epoch and checks it learned"),  # ZeroDivisionError before
    (["summary", "resnet18", "width=inf"], "width=inf: expected 0 < width <= 8"),  # an OverflowError before
    (["train", "depth=3"], "unknown config key 'depth'"),
    (["train", "epochs"], "'epochs': expected key=value (a config file, first, ends in .yaml)"),
    (["train", "extra=x"], "extra: cannot be set from the command line"),
    (["train", "data_source=imagefolder"], "data_source=imagefolder needs data_root="),
    (["quantize", "quant_preset=fast"], "quant_preset=fast: choose performance | mixed"),
    (["quantize", "preset=mixed"], "preset=mixed: choose auto, cpu, cpu_long, gpu, phone"),  # one name: quant_preset
    (["prune", "prune_method=random"], "prune_method=random: choose magnitude | structured"),
    (["prune", "prune_ratio=1.5"], "prune_ratio=1.5: expected 0 < prune_ratio < 1"),
    (["prune", "structured_ratio=0"], "structured_ratio=0.0: expected 0 < structured_ratio < 1"),
    (["run", "bench_runs=0"], "bench_runs=0: expected 1 <= bench_runs"),
    (["run", "bench_warmup=-1"], "bench_warmup=-1: expected 0 <= bench_warmup"),
    (["run", "bench_threads=1,x"], "bench_threads=1,x: expected comma-separated thread counts >= 1"),
    (["run", "bench_threads=0"], "bench_threads=0: expected comma-separated thread counts >= 1"),
    (["run", "force=maybe"], "force=maybe: expected bool"),
    # a range check at the door, like the others here; the gate itself is tested at its default on a bad file
    # (test_explain.py)
    (["run", "max_int8_drop=101"], "max_int8_drop=101.0: expected 0 <= max_int8_drop <= 100"),
    (["run", "max_size_mib=-1"], "max_size_mib=-1.0: expected 0 <= max_size_mib"),
    (["run", "bundle_images=0"], "bundle_images=0: expected 1 <= bundle_images"),
    (["evaluate", "nowhere.tflite"], "nowhere.tflite: artifact not found"),
    (["benchmark", "bench_runs=3"], "not a run directory (no config.yaml)"),  # the stage, on a run that isn't there
    (["explain", "explain_images=8"], "not a run directory (no config.yaml)"),
]


@pytest.mark.parametrize("argv, message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_line_exit_2(argv, message, tmp_path, capsys):
    verb, *rest = argv
    pointed = [] if verb in ("summary", "evaluate") else [f"runs_dir={tmp_path}"]
    code = main([verb, *rest, *pointed])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert message in err
    assert not list(tmp_path.rglob("*.pt"))  # nothing trained on bad input


def test_yaml_errors_name_the_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: resnet18\nepochs: [1, 2\nlr: 0.1\n")
    assert main(["train", str(bad), f"runs_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}:3: YAML syntax error") and err.count("\n") == 1
    bad.write_text("model: resnet18\nepochs: [1, 2]\n")
    assert main(["train", str(bad), f"runs_dir={tmp_path}"]) == 2
    assert capsys.readouterr().err == "error: epochs=[1, 2]: expected int, got list\n"
    bad.write_text("- model\n- epochs\n")
    assert main(["train", str(bad)]) == 2
    assert "expected a mapping of key: value, got a list" in capsys.readouterr().err
    bad.write_text("modle: resnet18\n")
    assert main(["train", str(bad)]) == 2
    assert "unknown config keys ['modle']" in capsys.readouterr().err


def test_a_home_folder_in_yaml_is_the_home_folder(tmp_path, monkeypatch):
    """A YAML file has no shell to expand ~: the paths in it are expanded as the command line's are, and only ~."""
    from pipeline.config import load_config

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "edge.yaml"
    config.write_text("runs_dir: ~/edge-runs\ndata_root: ~/fashion\nweights: ~/w.pt\nignored_scope: ~fc\n")
    cfg = load_config(config)
    assert cfg.runs_dir == str(tmp_path / "home" / "edge-runs") and cfg.data_root == str(tmp_path / "home" / "fashion")
    assert cfg.weights == str(tmp_path / "home" / "w.pt") and cfg.ignored_scope == "~fc"  # not a path: as written
    assert cfg.run_dir == tmp_path / "home" / "edge-runs" / "default"
    config.write_text("runs_dir: $HOME/runs\n")  # no variables, no globbing: only ~
    assert load_config(config).runs_dir == str(tmp_path / "$HOME" / "runs")
    assert load_config(None, {"runs_dir": "~/cli-runs"}).runs_dir == str(tmp_path / "home" / "cli-runs")
    assert not (tmp_path / "~").exists()


def test_verbose_shows_the_cause(tmp_path, capsys, monkeypatch):
    args = ["train", "epochs=two", f"runs_dir={tmp_path}"]
    assert main(["--verbose", *args]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "ValueError: invalid literal for int()" in err  # the cause, kept
    assert err.strip().splitlines()[-1] == "error: epochs=two: expected int"
    monkeypatch.setenv("RESNET_EDGE_DEBUG", "1")
    assert main(args) == 2
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.delenv("RESNET_EDGE_DEBUG")
    assert main([args[0], "--verbose", *args[1:]]) == 2  # after the verb as well
    assert "Traceback" in capsys.readouterr().err


def test_every_config_key_is_declared_by_a_stage_or_neutral():
    """A key no stage declares would change a result without re-running anything: each is owned, a stage's switch,
    or neutral. A stage added with a key the typed Config lacks is named here."""
    from pipeline.chain import CHAIN
    from pipeline.config.keys import NEUTRAL_KEYS

    declared = set().union(*(s.keys for s in CHAIN))
    switches = {s.switch for s in CHAIN if s.switch}
    fields = {f.name for f in dataclasses.fields(Config)}
    assert fields - declared - switches - NEUTRAL_KEYS == set()
    assert {s.name: sorted(s.keys - fields) for s in CHAIN if s.keys - fields} == {}  # add them to Config
    assert switches | NEUTRAL_KEYS <= fields  # and none of them is a typo
    assert all(
        dataclasses.fields(Config)[[f.name for f in dataclasses.fields(Config)].index(k)].type == "bool"
        for k in switches
    )


def test_changing_a_gate_key_regates_every_gated_row(tiny_run, tmp_path):
    """Every stage that gates a file on its top-1 drop runs again when a gate key changes (dropping the gate keys from
    one stage's key used to pass the test above, and `run max_int8_drop=0.5` then kept gates made at 1.0); and the
    rows it re-makes carry the new threshold."""
    from conftest import copy_run

    from pipeline.chain import context, stages
    from pipeline.config import load_config
    from pipeline.engine.contract import decide, stage_key
    from pipeline.run import run_one

    cfg = copy_run(tiny_run, tmp_path, "regate")
    changes = {"max_int8_drop": "0.5", "quant_fallback": "off", "max_float_layers": "3", "explain_images": "32"}
    gated = ("convert", "litert", "quantize", "prune_structured", "prune_magnitude")
    base = context(cfg)
    for key, value in changes.items():
        other = context(load_config(cfg.run_dir / "config.yaml", {key: value}))
        assert [s for s in gated if stage_key(stages()[s], base) == stage_key(stages()[s], other)] == [], key
    assert decide(stages()["convert"], base)[0] == "cached"
    tighter = load_config(cfg.run_dir / "config.yaml", {"max_int8_drop": "0.5"})
    assert decide(stages()["convert"], context(tighter))[0] == "run"
    try:
        run_one("convert", tighter)
    except EdgeError as e:  # a 3-epoch model may miss a half-point gate: that is the new gate at work
        assert "top-1 drop FAILED" in str(e) and "need <= 0.5" in str(e)
    for rel in ("tflite/int8.tflite", "tflite/dynamic_range.tflite"):
        record = json.loads((cfg.run_dir / "results" / f"{rel}.json").read_text())
        assert [g["threshold"] for g in record["gates"] if g["name"] == "top-1 drop"] == [0.5], rel


def test_an_error_no_check_caught_is_still_one_line(tmp_path, capsys, monkeypatch):
    """The mechanism behind every bad input not listed above: whatever escapes a verb is one `error:` line, exit 2,
    the traceback only with --verbose."""
    import pipeline.cli as cli

    def boom(args):
        raise OverflowError("cannot convert float infinity to integer")

    monkeypatch.setattr(cli, "cmd_summary", boom)
    monkeypatch.setattr(cli, "build_parser", lambda real=cli.build_parser: _with(real(), "summary", boom))
    assert main(["summary", "resnet18"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "error: summary: OverflowError: cannot convert float infinity to integer (unexpected: --verbose "
        "shows where; please report it)\n"
    )
    assert main(["--verbose", "summary", "resnet18"]) == 2
    assert "Traceback" in capsys.readouterr().err


def _with(parser, verb, func):
    parser._subparsers._group_actions[0].choices[verb].set_defaults(func=func)
    return parser


def test_run_and_train_on_an_existing_run_start_from_its_saved_config(tmp_path):
    """`run name=x` after a custom `train name=x width=0.5 epochs=1` used to retrain x with the defaults and replace
    its best.pt; now every verb starts from the run's saved config, the keys given on top (preset= starts afresh)."""
    from pipeline.cli import _config
    from pipeline.config import load_config, save_config

    where = [f"runs_dir={tmp_path}", "name=x"]
    custom = load_config(
        None, {"runs_dir": str(tmp_path), "name": "x", "width": "0.5", "epochs": "1", "resume": "true"}
    )
    save_config(custom, custom.run_dir / "config.yaml")
    cfg = _config(where)
    assert (cfg.width, cfg.epochs, cfg.resume) == (0.5, 1, False)  # resume=true was one command's request
    assert (_config([*where, "epochs=3"]).width, _config([*where, "epochs=3"]).epochs) == (0.5, 3)
    fresh = _config([*where, "preset=cpu_long"])
    assert (fresh.width, fresh.epochs) == (1.0, 10)
    assert _config([f"runs_dir={tmp_path}", "name=y"]).width == 1.0  # a new run: the defaults


def test_report_and_bundle_take_the_run_by_name_as_every_verb_does(tiny_run, tmp_path, capsys, monkeypatch):
    """`report name=x` used to read "name=x" as a folder ("name=x: not a run directory"); RUN_DIR still works."""
    from conftest import copy_run

    run = copy_run(tiny_run, tmp_path, "named").run_dir
    assert main(["report", "name=named", f"runs_dir={tmp_path}"]) == 0
    assert (run / "report" / "report.md").read_text().startswith(f"# resnet-edge report: {run}")
    assert main(["bundle", f"runs_dir={tmp_path}", "name=named", "bundle_models=int8"]) == 0
    assert sorted(p.name for p in (run / "device_bundle" / "models").iterdir()) == ["int8.tflite"]
    assert main(["report", str(run)]) == 0
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["report"]) == 2  # no runs/default here
    assert capsys.readouterr().err == (
        "error: runs/default: not a run directory (no config.yaml); run `resnet-edge run` first\n"
    )


def test_every_path_key_is_stored_absolute_as_meant_where_it_was_typed(tmp_path, monkeypatch):
    """key=value paths are relative to the folder the command ran in, a YAML file's to the file's folder; the saved
    config names the same files from any folder. Names that are no file (weights=torchvision, "") stay."""
    from pipeline.config import load_config, open_run, save_config
    from pipeline.config.load import PATH_KEYS

    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    typed = {"runs_dir": "runs", "data_root": "data", "weights": "w.pt", "latency_table": "table.json"}
    assert set(typed) == set(PATH_KEYS)
    cfg = load_config(None, typed | {"name": "r"})
    assert {k: getattr(cfg, k) for k in typed} == {k: str(tmp_path / "here" / v) for k, v in typed.items()}
    save_config(cfg, cfg.run_dir / "config.yaml")
    monkeypatch.chdir(tmp_path)  # fit run later from another folder finds the same table
    assert open_run(tmp_path / "here" / "runs" / "r").latency_table == str(tmp_path / "here" / "table.json")
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "edge.yaml").write_text("data_root: ../data\nlatency_table: t.json\nweights: torchvision\n")
    cfg = load_config(tmp_path / "conf" / "edge.yaml")
    assert cfg.data_root == str(tmp_path / "data") and cfg.latency_table == str(tmp_path / "conf" / "t.json")
    assert cfg.weights == "torchvision" and load_config(None, {}).latency_table == ""


REFUSED = [  # (key=value words on an existing run, what the one line says)
    (["budget_ms=abc"], "budget_ms=abc: expected float"),
    (["budget_threads=0"], "budget_threads=0: expected 1 <= budget_threads"),
    (["budget_ms=0"], "budget_ms=0: expected budget_ms > 0"),  # once read as "no budget", clearing the saved one
    (["budget_speedup=-2"], "budget_speedup=-2: expected budget_speedup > 0"),
    (["budget_ms=2", "budget_mib=3"], "budget_ms=2 budget_mib=3: give one budget"),
    (
        ["budget_speedup=10", "latency_table=t.json"],
        "a device's table is for budget_ms (ms on that device), not budget_speedup",
    ),
    ([], "fit: give a budget"),  # the stage's own refusal, at its door
    (["shortcut=A", "budget_ms=2"], "the search prunes ResNets with projection shortcuts"),
]


@pytest.mark.parametrize("words, message", REFUSED, ids=[" ".join(w) or "no budget" for w, _ in REFUSED])
def test_a_refused_command_leaves_the_run_as_it_was(words, message, tmp_path, capsys):
    """By the config's checks or the stage's own at its door: one line, exit 2, and config.yaml byte for byte as it
    was, nothing else written (a refused budget saved there failed every later fit of the run)."""
    from conftest import snapshot

    from pipeline.config import load_config, save_config

    saved = {"budget_mib": "2.5"} if words else {}  # a run fitted to a budget before (the last: none yet)
    cfg = load_config(None, {"runs_dir": str(tmp_path), "name": "r", **saved})
    save_config(cfg, cfg.run_dir / "config.yaml")
    before, files = (cfg.run_dir / "config.yaml").read_bytes(), snapshot(cfg.run_dir)
    assert main(["fit", str(cfg.run_dir), *words]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert (cfg.run_dir / "config.yaml").read_bytes() == before and snapshot(cfg.run_dir) == files


def test_a_host_latency_is_this_hosts_and_reruns_on_another(tmp_path, monkeypatch):
    """fit's cache key names the host for a latency measured here: a run folder copied to another CPU fits again
    there. A size budget or a device's table is the same on any host."""
    import dataclasses

    from pipeline.chain import context, stages
    from pipeline.config import load_config
    from pipeline.engine import contract

    fit = stages()["fit"]
    cfg = load_config(None, {"runs_dir": str(tmp_path), "name": "r", "budget_ms": "2"})
    here = contract.stage_key(fit, context(cfg))
    monkeypatch.setattr(contract, "host_identity", lambda: {"cpu": "Intel Xeon (AMX)", "isa": ["amx_tile"]})
    assert contract.stage_key(fit, context(cfg)) != here
    for other in ({"budget_ms": 0.0, "budget_mib": 2.5}, {"latency_table": str(tmp_path / "t.json")}):
        changed = dataclasses.replace(cfg, **other)
        monkeypatch.undo()
        mine = contract.stage_key(fit, context(changed))
        monkeypatch.setattr(contract, "host_identity", lambda: {"cpu": "Intel Xeon (AMX)", "isa": ["amx_tile"]})
        assert contract.stage_key(fit, context(changed)) == mine
