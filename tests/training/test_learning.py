"""A short TNet training run on an easy Megapixel MNIST must learn well above chance (10%)."""
from foveate.training import fit
from foveate.training import test as evaluate

EASY = {
    "seed": 0,
    "model": {"name": "tnet", "num_classes": 10, "in_chans": 1, "backbone": "small_cnn", "levels": 2,
              "grid": 3, "overlap": 0.5, "base_resolution": 80, "locations": 2},
    "data": {"name": "megapixel_mnist", "canvas_size": 160, "n_noise": 0, "n_train": 1024, "n_val": 128,
             "n_test": 256, "batch_size": 16, "num_workers": 0},
    "optim": {"lr": 0.002},
    "trainer": {"max_epochs": 5, "accelerator": "cpu", "devices": 1, "enable_progress_bar": False,
                "enable_model_summary": False},
    "eval": {"locations": [2]},
}


def test_short_run_learns_well_above_chance(tmp_path, mnist_dir):
    cfg = {**EASY, "output_dir": str(tmp_path), "data": {**EASY["data"], "digits": str(mnist_dir)}}
    result = fit(cfg)
    acc = evaluate(result["best_checkpoint"])["test/acc@2"]
    assert acc > 0.3, acc  # chance is 0.1; test canvases use held-out digits (measured: ~0.5)
