"""The demo recipe trained in mlpx and in PyTorch, step for step, from the same start.

scikit-learn's digits, MLP 64-128-64-10 (ReLU), cross-entropy, batch 32, plain SGD (lr 0.05)
and Adam (lr 1e-3). Both frameworks start from mlpx's initial weights and see the same
mini-batches in the same order (mlpx's per-epoch permutation, reproduced below), so any
difference is arithmetic rounding. Measured (15 epochs, 645 steps; 2-core CPU, torch 2.13):

| dtype   | optimiser | loss, max rel. diff | weights, max abs. diff | diff / movement | labels  |
|---------|-----------|---------------------|------------------------|-----------------|---------|
| float64 | SGD       | 1.5e-15             | 7e-16                  | 3e-15           | same    |
| float64 | Adam      | 1.3e-15             | 5e-15                  | 3e-15           | same    |
| float32 | SGD       | 2e-7                | 3e-7 .. 1.7e-6         | 2e-6            | same    |
| float32 | Adam      | 2e-6                | 3e-7 .. 1.4e-5         | 1.3e-5          | same    |

("diff / movement": ||W_mlpx - W_torch|| / ||W_mlpx - W_initial|| per array, the largest;
float32 ranges: two BLAS code paths.) Both reach 96.9 % test accuracy.
"""

from __future__ import annotations

import numpy as np
import pytest

import mlpx
from mlpx.commands.demo import load_digits_split

torch = pytest.importorskip("torch")

SIZES = [64, 128, 64, 10]
EPOCHS = 15
BATCH = 32
SEED = 0
OPTIMIZERS = {"sgd": 0.05, "adam": 1e-3}

# float64: both sides round every operation to 53 bits; the runs differ by ~1e-15.
FLOAT64 = {"loss_rtol": 1e-12, "weight_atol": 1e-12, "movement_rtol": 1e-11, "accuracy_diff": 0.0}
# float32: the frameworks' matrix products add in different orders (a few ulp per step), and
# torch's batch loss is a float32 value where mlpx sums the epoch in float64. Adam divides by
# sqrt(v), so a weight whose gradients are tiny moves ~lr per step whatever their rounding:
# a few such weights carry the largest absolute differences. 0.5 % = 2 of the 450 test samples.
FLOAT32 = {"loss_rtol": 3e-5, "weight_atol": 1e-4, "movement_rtol": 1e-3, "accuracy_diff": 0.005}


def _mlpx_permutation(model: mlpx.Sequential, run: int, epoch: int, n: int) -> np.ndarray:
    """The batch order of `fit` (mlpx/training.py): one generator per (seed, run, epoch)."""
    rng = np.random.default_rng(np.random.SeedSequence([model.seed, run, epoch]))
    return rng.permutation(n)


def _torch_twin(weights: list[np.ndarray], dtype: torch.dtype) -> torch.nn.Sequential:
    layers: list[torch.nn.Module] = []
    for i in range(len(SIZES) - 1):
        lin = torch.nn.Linear(SIZES[i], SIZES[i + 1], dtype=dtype)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(weights[2 * i].T.copy()))  # mlpx W is (in, out)
            lin.bias.copy_(torch.from_numpy(weights[2 * i + 1]))
        layers.append(lin)
        if i < len(SIZES) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def _train_torch(net, X: np.ndarray, y: np.ndarray, opt_name: str, orders) -> list[float]:
    lr = OPTIMIZERS[opt_name]
    opt = (torch.optim.SGD if opt_name == "sgd" else torch.optim.Adam)(net.parameters(), lr=lr)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y.astype(np.int64))
    loss_fn = torch.nn.CrossEntropyLoss()
    losses = []
    for order in orders:
        total = 0.0
        for s in range(0, len(X), BATCH):
            idx = torch.from_numpy(order[s:s + BATCH])
            opt.zero_grad()
            loss = loss_fn(net(Xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)  # the sample-weighted mean, as mlpx's History
        losses.append(total / len(X))
    return losses


@pytest.fixture(scope="module")
def digits():
    return load_digits_split(seed=SEED)


@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_digits_recipe_matches_pytorch_step_for_step(digits, dtype, opt_name):
    X_tr, X_te, y_tr, y_te = digits
    np_dtype = np.dtype(dtype)
    # float32 digits are exact in float64, so both precisions see the same inputs
    X_tr, X_te = X_tr.astype(np_dtype), X_te.astype(np_dtype)
    bounds = FLOAT64 if dtype == "float64" else FLOAT32

    model = mlpx.MLP(SIZES, activation="relu", backend="cpu", dtype=dtype, seed=SEED)
    w0 = model.get_weights()
    assert [w.shape for w in w0[::2]] == [(64, 128), (128, 64), (64, 10)]
    hist = model.fit(
        X_tr, y_tr, loss="cross_entropy", optimizer=opt_name, lr=OPTIMIZERS[opt_name],
        epochs=EPOCHS, batch_size=BATCH, verbose=0,
    )

    torch_dtype = torch.float64 if dtype == "float64" else torch.float32
    net = _torch_twin(w0, torch_dtype)
    orders = [_mlpx_permutation(model, 0, e, len(X_tr)) for e in range(EPOCHS)]
    torch_losses = _train_torch(net, X_tr, y_tr, opt_name, orders)

    # the recipe learns (so agreement below is not two frozen runs agreeing)
    assert hist.loss[-1] < 0.2 * hist.loss[0]
    np.testing.assert_allclose(hist.loss, torch_losses, rtol=bounds["loss_rtol"], atol=0)

    torch_weights = []
    for lin in net[::2]:
        torch_weights += [lin.weight.detach().numpy().T, lin.bias.detach().numpy()]
    for i, (a, b, a0) in enumerate(zip(model.get_weights(), torch_weights, w0, strict=True)):
        assert a.dtype == b.dtype == np_dtype
        np.testing.assert_allclose(a, b, rtol=0, atol=bounds["weight_atol"], err_msg=f"weight {i}")
        moved = np.linalg.norm(a - a0)
        assert moved > 0.1 * np.linalg.norm(a0), f"weight {i} barely trained"
        assert np.linalg.norm(a - b) <= bounds["movement_rtol"] * moved, f"weight {i}"

    with torch.no_grad():
        torch_labels = net(torch.from_numpy(X_te)).argmax(dim=1).numpy()
    mlpx_labels = model.predict(X_te).argmax(axis=1)
    acc_mlpx, acc_torch = np.mean(mlpx_labels == y_te), np.mean(torch_labels == y_te)
    assert acc_mlpx >= 0.9
    if dtype == "float64":
        np.testing.assert_array_equal(mlpx_labels, torch_labels)
    assert abs(acc_mlpx - acc_torch) <= bounds["accuracy_diff"]
