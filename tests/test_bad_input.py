"""Bad input gets one clear error naming the valid choices, before any run folder is created."""

import pytest

from lop_core import config, experiment, runs, sweep
from lop_core.cli import main
from lop_core.errors import ConfigError, RunError

GOOD_ENTRIES = "entries:\n  - {method: base, width: 10}\n"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("benchmark: permuted_mnist\nseeds: {smoke: 0-1\n" + GOOD_ENTRIES, "not valid YAML"),
        ("- just\n- a list\n", "expected a mapping"),
        ("benchmark: permuted_mnist\nseeds: 0-4\n" + GOOD_ENTRIES, "'seeds' must map a preset"),
        ("benchmark: permuted_mnist\nseeds: {smok: 0-1}\n" + GOOD_ENTRIES, "unknown presets ['smok']"),
        (
            "benchmark: permuted_mnist\nseeds: {smoke: 0-1}\npresets: {fast: {num_tasks: 2}}\n"
            + GOOD_ENTRIES,
            "smoke",
        ),
        ("benchmark: permuted_mnist\nseeds: {quick: 0-1}\n" + GOOD_ENTRIES, "no seeds for preset 'smoke'"),
        ("benchmark: cifar\nseeds: {smoke: 0-1}\n" + GOOD_ENTRIES, "permuted_mnist"),
        ("benchmark: permuted_mnist\nseeds: {smoke: 0-1}\nentries:\n  - {method: magic}\n", "swr"),
        ("benchmark: permuted_mnist\nseeds: {smoke: 0-1}\nentries:\n  - {widht: 10}\n", "valid:"),
        ("benchmark: permuted_mnist\nseeds: {smoke: 0-1}\nentries:\n  - {width: [10, 0]}\n", "width"),
        ("benchmark: permuted_mnist\nseeds: {smoke: 0-1}\nentries:\n  - not a mapping\n", "mapping"),
        (
            "benchmark: permuted_mnist\nseeds: {smoke: 0-1}\npreset: {smoke: {num_tasks: 1}}\n"
            + GOOD_ENTRIES,
            "unknown key 'preset'",
        ),
        (
            "benchmark: permuted_mnist\nseeds: {smoke: 0-1}\nentrys: []\n" + GOOD_ENTRIES,
            "unknown key 'entrys'",
        ),
        ("benchmark: permuted_mnist\nseeds: {smoke: 0-1}\nentries:\n  - {width: 10, seed: 3}\n", "seeds:"),
        ("benchmark: permuted_mnist\nseeds: {smoke: 0-1}\nentries:\n  - {preset: paper}\n", "--preset"),
        ("benchmark: permuted_mnist\nseeds: {smoke: 0-1}\nentries:\n  - {benchmark: x}\n", "benchmark:"),
        ("benchmark: permuted_mnist\nseeds: {smoke: 0-1}\nentries:\n  - {method_args: x}\n", "method_args"),
    ],
)
def test_a_bad_sweep_file_is_refused(text, needle, tmp_path_factory, tmp_path, capsys):
    path = tmp_path_factory.mktemp("sweeps") / "bad.yaml"
    path.write_text(text)
    for command in ("sweep", "status"):
        assert main([command, str(path), "--preset", "smoke", "--runs-dir", str(tmp_path)]) == 2
        assert needle in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_sweep_file_errors_name_the_file_and_what_is_wrong(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("benchmark: permuted_mnist\nseeds: {smoke: 0-1}\npreset: {smoke: {}}\n" + GOOD_ENTRIES)
    with pytest.raises(ConfigError) as err:
        sweep.read_sweep(path)
    assert str(path) in str(err.value) and "['benchmark', 'entries', 'presets', 'seeds']" in str(err.value)
    path.write_text("benchmark: permuted_mnist\nseeds: {smoke: 0-1}\n" + GOOD_ENTRIES + "  - {widht: 10}\n")
    with pytest.raises(ConfigError, match="unknown parameter 'widht'") as err:
        sweep.expand(path, "smoke")
    assert str(err.value).startswith(f"{path}: entry 2 ")


def test_width_has_a_generous_upper_bound():
    assert config.resolve("permuted_mnist", "smoke", width=1_000_000).width == 1_000_000
    with pytest.raises(ConfigError, match="width"):
        config.resolve("permuted_mnist", "smoke", width=1_000_001)


def test_a_sweep_file_is_read_with_a_safe_loader(tmp_path_factory, tmp_path, capsys):
    marker = tmp_path_factory.mktemp("marker") / "pwned"
    path = tmp_path_factory.mktemp("sweeps") / "evil.yaml"
    path.write_text(f'!!python/object/apply:os.system ["touch {marker}"]\n')
    assert main(["sweep", str(path), "--preset", "smoke", "--runs-dir", str(tmp_path)]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    assert not marker.exists() and not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["run", "permuted_mnist", "--set", "step_size=inf"], "finite"),
        (["run", "permuted_mnist", "--set", "step_size=nan"], "finite"),
        (["run", "permuted_mnist", "--set", "momentum=-0.5"], "momentum"),
        (["run", "permuted_mnist", "--method", "cbp", "--set", "replacement_rate=-1e-4"], "replacement_rate"),
        (
            [
                "run",
                "permuted_mnist",
                "--method",
                "swr",
                "--set",
                "pruning=proportional",
                "--set",
                "reinit_factor=2",
            ],
            "proportional",
        ),
        (["run", "permuted_mnist", "--set", "num_tasks=0"], "num_tasks"),
        (["run", "permuted_mnist", "--set", "depth=two"], "depth"),
        (["run", "permuted_mnist", "--checkpoint-every", "-1"], "checkpoint interval"),
        (["run", "permuted_mnist", "--set", "method=swr"], "use --method"),
        (["run", "permuted_mnist", "--set", "seed=3"], "use --seeds"),
        (["run", "permuted_mnist", "--set", "preset=paper"], "use --preset"),
        (["run", "permuted_mnist", "--set", "benchmark=x"], "benchmark"),
        (["run", "permuted_mnist", "--set", "method_args=x"], "method_args"),
        (["run", "permuted_mnist", "--set", "width=1e22"], "width"),
        (["run", "permuted_mnist", "--set", "num_tasks=1e22"], "num_tasks"),
        (["sweep", "a1", "--jobs", "0"], "--jobs"),
        (["sweep", "a1", "--executor", "slurm", "--time", "0"], "--time"),
        (["sweep", "a1", "--executor", "slurm", "--per-job", "0"], "--per-job"),
        (["status", "a1", "--preset", "huge"], "smoke"),
    ],
)
def test_bad_values_are_refused_before_anything_is_written(argv, needle, tmp_path, capsys):
    assert main([*argv, "--runs-dir", str(tmp_path)]) == 2
    assert needle in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_a_missing_data_root_is_refused_before_anything_is_written(tmp_path, capsys):
    argv = ["run", "permuted_mnist", "--preset", "smoke", "--runs-dir", str(tmp_path / "runs")]
    assert main([*argv, "--data", str(tmp_path / "no_data")]) == 2
    assert "MNIST is not under" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_corrupt_finished_run_is_reported(tmp_path, data_root, capsys):
    cfg = config.resolve("permuted_mnist", "smoke", width=10, num_tasks=1, examples_per_task=300)
    experiment.run_or_load([cfg], runs_dir=tmp_path, data_root=data_root, progress=False)
    (runs.run_path(cfg, tmp_path) / "summary.json").write_text("{half")
    with pytest.raises(RunError, match="corrupt"):
        experiment.run_or_load([cfg], runs_dir=tmp_path, data_root=data_root, progress=False)
    assert runs.run_state(runs.run_path(cfg, tmp_path)) == "corrupt"
    with pytest.raises(RunError, match="corrupt"):
        runs.load([cfg], tmp_path)


def test_no_parameter_places_files_outside_the_store(tmp_path):
    cfg = config.resolve("permuted_mnist", "smoke")
    cfg.method = "../../escaped"  # past validation, e.g. a hand-edited config
    cfg.benchmark = "../.."
    path = runs.run_path(cfg, tmp_path)
    assert path.resolve().parent.parent == tmp_path.resolve()
    assert runs.safe_name("../x/.y") == "_._x_.y" and runs.safe_name("..") == "_."
    with pytest.raises(ConfigError, match="unknown benchmark"):
        runs.config_from_json({**cfg.to_dict(), "benchmark": "../.."})
    with pytest.raises(ConfigError, match="unknown sweep|no sweep file"):
        sweep.sweep_path("../../etc/passwd")
