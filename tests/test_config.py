import pytest

from lop_core import config
from lop_core.config import ConfigError


def test_resolve_applies_preset_and_overrides():
    cfg = config.resolve("permuted_mnist", "smoke", seed=3, width="10", step_size="0.1", layer_norm="true")
    assert (cfg.width, cfg.step_size, cfg.layer_norm, cfg.seed) == (10, 0.1, True, 3)
    assert cfg.num_tasks == config.PRESET_VALUES["permuted_mnist"]["smoke"]["num_tasks"]
    paper = config.resolve("permuted_mnist", "paper")
    assert (paper.num_tasks, paper.examples_per_task, paper.batch_size, paper.steps_per_task) == (
        1000,
        60000,
        30,
        2000,
    )


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"benchmark": "cifar"}, "permuted_mnist"),
        ({"preset": "fast"}, "smoke"),
        ({"method": "magic"}, "base"),
        ({"widht": 10}, "width"),
        ({"width": 0}, "width"),
        ({"width": "ten"}, "width"),
        ({"width": 2.5}, "integer"),
        ({"step_size": -0.1}, "step_size"),
        ({"activation": "swish"}, "relu"),
        ({"optimizer": "sgd"}, "sgdw"),
        ({"layer_norm": "maybe"}, "true or false"),
        ({"examples_per_task": 70000}, "examples_per_task"),
        ({"l2_factor": 1.5}, "l2_factor"),
        ({"activation": "crelu", "width": 11}, "even width"),
        ({"activation": "crelu", "method": "cbp"}, "use swr, l2"),
        ({"skip_connections": True, "method": "redo"}, "use swr, l2"),
    ],
)
def test_bad_input_is_refused_with_the_valid_choices(kwargs, needle):
    benchmark = kwargs.pop("benchmark", "permuted_mnist")
    preset = kwargs.pop("preset", "quick")
    with pytest.raises(ConfigError, match=needle):
        config.resolve(benchmark, preset, **kwargs)


def test_parse_seeds_forms():
    assert config.parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert config.parse_seeds("[0, 1]") == [0, 1]
    assert config.parse_seeds("0,2,5") == [0, 2, 5]
    assert config.parse_seeds([3, 1]) == [3, 1]
    assert config.parse_seeds(7) == [7]
    for bad in ("a-b", "", "3-1", "1,1", "-2"):
        with pytest.raises(ConfigError):
            config.parse_seeds(bad)


def test_hash_names_the_config_and_ignores_nothing_relevant():
    a = config.resolve("permuted_mnist", "quick", seed=0)
    b = config.resolve("permuted_mnist", "quick", seed=0)
    c = config.resolve("permuted_mnist", "quick", seed=0, width=10)
    assert config.run_name(a) == config.run_name(b)
    assert config.config_hash(a) != config.config_hash(c)
    assert config.run_name(c).startswith("base-w10-s0-")
    # a field added later leaves the names of earlier runs (made without it) as they were
    skip = config.resolve("permuted_mnist", "quick", seed=0, skip_connections=True)
    assert config.config_hash(skip) != config.config_hash(a)
    assert config.run_name(a) == "base-w100-s0-52776de2"  # the name before skip_connections existed


def test_population_key_groups_only_per_run_differences():
    a = config.resolve("permuted_mnist", "quick", seed=0)
    b = config.resolve("permuted_mnist", "quick", seed=1, step_size=0.01)
    c = config.resolve("permuted_mnist", "quick", seed=1, width=10)
    assert config.population_key(a) == config.population_key(b)
    assert config.population_key(a) != config.population_key(c)


def test_parse_assignments():
    assert config.parse_assignments(["width=10", " step_size = 0.1"]) == {"width": "10", "step_size": "0.1"}
    with pytest.raises(ConfigError, match="name=value"):
        config.parse_assignments(["width"])


def test_init_is_a_field_that_reaches_the_model_and_keeps_old_names(data_root):
    """``init=kaiming_uniform`` (Dohare's) builds a uniform-init population; the default
    (``kaiming_normal``) is left out of the hash, so runs made before the field keep their names."""
    from lop_core.train import Population

    cfg = config.resolve("permuted_mnist", "smoke", width=10, init="kaiming_uniform")
    pop = Population([cfg], device="cpu", data_root=data_root)
    assert pop.model.uniform_init and pop.model.weights[0].abs().max() <= pop.model.stds[0]
    plain = config.resolve("permuted_mnist", "smoke", width=10)
    assert config.run_name(cfg) != config.run_name(plain)
    assert config.run_name(config.resolve("permuted_mnist", "quick")) == "base-w100-s0-52776de2"
    with pytest.raises(config.ConfigError, match="kaiming_uniform"):
        config.resolve("permuted_mnist", "smoke", init="xavier")
