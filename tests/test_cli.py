import pytest

from lop_core.cli import main


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["run", "cifar"], "permuted_mnist"),
        (["run", "permuted_mnist", "--method", "magic"], "base"),
        (["run", "permuted_mnist", "--set", "width=0"], "width"),
        (["run", "permuted_mnist", "--set", "nonsense=1"], "valid:"),
        (["run", "permuted_mnist", "--preset", "huge"], "smoke"),
        (["run", "permuted_mnist", "--seeds", "x"], "seeds"),
        (["sweep", "no_such_sweep"], "known sweeps"),
        (["bench", "--methods", "magic"], "unknown methods"),
        (["bench", "--runs", "0"], "positive"),
    ],
)
def test_bad_input_fails_before_anything_is_written(argv, needle, tmp_path, capsys):
    assert main([*argv, "--runs-dir", str(tmp_path)]) == 2
    assert needle in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_run_command_makes_runs(tmp_path, data_root, capsys):
    argv = [
        "run",
        "permuted_mnist",
        "--preset",
        "smoke",
        "--set",
        "width=10",
        "--seeds",
        "0-1",
        "--runs-dir",
        str(tmp_path),
        "--data",
        str(data_root),
        "--no-progress",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out.split()
    assert len(out) == 2 and all("base-w10-s" in line for line in out)
    assert all((tmp_path / "permuted_mnist" / p.split("/")[-1] / "DONE").exists() for p in out)


def test_list(capsys):
    assert main(["list"]) == 0
    assert "a1" in capsys.readouterr().out


def test_bench_writes_a_table_with_the_baseline(tmp_path, data_root):
    import json

    out = tmp_path / "bench.json"
    argv = [
        "bench",
        "--widths",
        "10",
        "--layer-norm",
        "on",
        "--methods",
        "base,l2,mixed",
        "--runs",
        "1,2",
        "--budget",
        "0.02",
        "--repeats",
        "1",
        "--data",
        str(data_root),
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    table = json.loads(out.read_text())
    rows = {(r["method"], r["runs"]): r for r in table["rows"]}
    assert set(rows) == {("torch_baseline", 1)} | {
        (m, r) for m in ("limit", "base", "l2", "mixed") for r in (1, 2)
    }
    assert rows["torch_baseline", 1]["ratio"] == 1.0
    assert all(r["run_steps_per_s"] > 0 and r["layer_norm"] for r in table["rows"])
    assert rows["limit", 2]["fraction_of_limit"] == 1.0 and rows["mixed", 2]["fraction_of_limit"] > 0
    assert table["threads"] >= 1
    assert "cpu" in table["device"]
