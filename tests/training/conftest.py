import pytest
import yaml

TINY = {
    "seed": 0,
    "model": {"name": "tnet", "num_classes": 10, "in_chans": 1, "backbone": "tiny_cnn", "levels": 2,
              "grid": 4, "overlap": 0.3, "base_resolution": 48, "locations": 2},
    "data": {"name": "megapixel_mnist", "canvas_size": 200, "n_train": 48, "n_val": 16, "n_test": 16,
             "batch_size": 16, "num_workers": 0},
    "optim": {"lr": 0.001},
    "trainer": {"max_epochs": 1, "accelerator": "cpu", "devices": 1, "enable_progress_bar": False,
                "enable_model_summary": False, "log_every_n_steps": 1},
    "eval": {"locations": [1, 2]},
}


def write_config(path, overrides=None, base=TINY):
    cfg = yaml.safe_load(yaml.safe_dump(base))
    for key, value in (overrides or {}).items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(name="write_config")
def write_config_fixture():
    return write_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny run shared by the round-trip tests: (config path, output dir)."""
    from foveate.cli import main

    tmp = tmp_path_factory.mktemp("fit")
    cfg = write_config(tmp / "tiny.yaml", {"output_dir": str(tmp / "run")})
    assert main(["fit", "--config", str(cfg)]) == 0
    return cfg, tmp / "run"
