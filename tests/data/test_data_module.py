import pytest
import torch

from foveate.data import MegapixelMNISTDataModule
from foveate.errors import FoveateError


def module(digits=None, **kw) -> MegapixelMNISTDataModule:
    args = dict(digits=digits, canvas_size=200, n_train=8, n_val=4, n_test=4, batch_size=4)
    return MegapixelMNISTDataModule(**(args | kw))


def test_loaders_and_hyperparameters(real_mnist_dir):
    dm = module(str(real_mnist_dir), label="multi")
    dm.setup("fit")
    pools = dm.pools
    dm.setup("test")
    assert dm.pools is pools  # loaded once
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 1, 200, 200) and y.shape == (4, 10)
    assert len(dm.val_dataloader()) == 1 and len(dm.test_dataloader().dataset) == 4
    assert dm.num_classes == 10
    assert dm.hparams["canvas_size"] == 200 and dm.hparams["digits"] == str(real_mnist_dir)
    assert dm.train_dataloader().pin_memory == torch.cuda.is_available()


def test_seeded_shuffle_and_worker_settings():
    first = [next(iter(module(seed=3).train_dataloader()))[1] for _ in range(2)]
    assert torch.equal(first[0], first[1])
    loader = module(num_workers=2).test_dataloader()
    assert loader.persistent_workers and not module().test_dataloader().persistent_workers


@pytest.mark.parametrize("kw", [dict(batch_size=0), dict(n_train=-1), dict(num_workers=-1),
                                dict(canvas_size=50), dict(profile="nope"), dict(label="nope")])
def test_bad_arguments(kw):
    with pytest.raises(FoveateError):
        module(**kw)
