"""Caption notes computed from constructed run tables: methods that never acted, CBP variant, optimizer state."""

import pandas as pd

from lop_core import chapters


def _metrics(counts: dict[tuple[str, int], list[float]], metric: str) -> pd.DataFrame:
    rows = [
        {"run": f"{m}-{s}", "method": m, "seed": s, "task": t, "metric": metric, "layer": "all", "value": v}
        for (m, s), values in counts.items()
        for t, v in enumerate(values)
    ]
    return pd.DataFrame(rows)


def test_a_resetting_method_that_reset_nothing_in_a_run_is_named():
    units = _metrics({("cbp", 0): [0, 0, 0], ("cbp", 1): [0, 2, 1], ("redo", 0): [3, 0, 0]}, "reset_units")
    weights = _metrics(
        {("swr", 0): [0.0, 0.0], ("swr", 1): [0.0, 0.0], ("base", 0): [0.0, 0.0]}, "reset_weights"
    )
    accuracy = _metrics({("swr", 0): [0.9, 0.9], ("base", 0): [0.8, 0.8]}, "online_accuracy")
    metrics = pd.concat([units, weights, accuracy])
    assert chapters.inactive_methods(metrics) == ["cbp", "swr"]  # CBP seed 0, both SWR runs
    assert (
        chapters.inactive_note(metrics)
        == "CBP and SWR reset nothing in at least one run: these runs cannot test them"
    )
    active = pd.concat([units[units.run != "cbp-0"], accuracy[accuracy.method == "base"]])
    assert chapters.inactive_methods(active) == [] and chapters.inactive_note(active) == ""
    # a run that logged no reset count at all is inactive too
    assert chapters.inactive_methods(accuracy) == ["swr"]


def test_method_note_names_the_cbp_variant_and_the_optimizer_state_setting():
    summaries = pd.DataFrame(
        {
            "method": ["base", "cbp", "swr", "redo"],
            "utility_average": [None, "instantaneous", None, None],
            "state_reset": [None, "none", "none", "none"],
        }
    )
    assert chapters.method_note(summaries) == (
        "CBP: instantaneous utility (the SWR paper's code); optimizer state at resets: kept (the reference's)"
    )
    dohare = summaries.assign(
        utility_average=[None, "running", None, None], state_reset=[None, "all", None, None]
    )
    assert chapters.method_note(dohare.iloc[:2]) == (
        "CBP: running, age-corrected utility (Dohare's); "
        "optimizer state at resets: moments and step count zeroed (Dohare's AdamGnT)"
    )
    assert chapters.method_note(summaries.iloc[:1]) == ""


def test_duplicate_shares_of_the_old_all_layers_definition_are_left_out():
    from lop_core.runs import old_duplicates_dropped

    def table(layers):
        rows = [(0, "duplicate_fraction", layer, 0.1) for layer in layers] + [
            (0, "online_accuracy", "all", 0.9)
        ]
        return pd.DataFrame(rows, columns=["task", "metric", "layer", "value"])

    old, new = table(["all"]), table(["1", "2", "3", "all"])
    assert list(old_duplicates_dropped(old).metric) == ["online_accuracy"]
    assert len(old_duplicates_dropped(new)) == 5  # per layer and their mean: kept
