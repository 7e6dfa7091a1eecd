"""Transfer (model/transfer.py): a fresh classifier trained on CT-derived images alone, tested on radiographs."""
import numpy as np
import pytest
import torch

from xpgan.model import greport
from xpgan.model import metrics as M
from xpgan.model.transfer import TransferSettings, train_on_images, transfer


def _squares(n: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """Grey noise images, the positives with a bright square at a random place."""
    g = torch.Generator().manual_seed(seed)
    x = 0.3 + 0.05 * torch.randn(n, 1, 32, 32, generator=g)
    y = (np.arange(n) % 2).astype(np.int64)
    for i in np.flatnonzero(y):
        r, c = torch.randint(4, 20, (2,), generator=g).tolist()
        x[i, 0, r:r + 8, c:c + 8] += 0.5
    return x.clamp(0, 1), y


@pytest.mark.slow
def test_a_classifier_trained_on_images_alone_learns_them(one_thread):
    x, y = _squares(48, seed=0)
    y[0] = -1                                                         # unknown labels are left out
    C = train_on_images(x, y, TransferSettings(steps=40, batch=16), torch.device("cpu"), 32)
    xt, yt = _squares(40, seed=1)
    with torch.no_grad():
        s = torch.softmax(C(xt), dim=1)[:, 1].numpy()
    assert M.auroc(yt, s) > 0.9


def test_transfer_tests_on_the_radiographs_of_the_store(toy_stores, one_thread):
    ct, cxr = toy_stores
    drr, labels = greport.stored_drrs(ct)
    out = transfer(drr, labels, cxr, 0.2, TransferSettings(steps=2, batch=4), torch.device("cpu"))
    assert out["train_images"] == int((labels >= 0).sum()) == 39        # the store's done, labelled items
    assert 0.0 <= out["auroc"] <= 1.0 and 0.0 <= out["f1"] <= 1.0 and out["steps"] == 2
    with pytest.raises(ValueError, match="both labels"):
        transfer(drr, np.zeros_like(labels), cxr, 0.2, TransferSettings(steps=1), torch.device("cpu"))
