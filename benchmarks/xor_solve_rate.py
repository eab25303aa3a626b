"""XOR solve rate of a 2-2-1 sigmoid network over seeds (the README's figures).

Recipe: sigmoid on both layers, zero biases, MSE, full-batch SGD with lr 2 for 5000 epochs;
a seed counts as solved when the output is on the right side of 0.5 for all four inputs.

    python benchmarks/xor_solve_rate.py mlpx 200                  # mlpx's default init
    python benchmarks/xor_solve_rate.py mlpx 200 xavier_uniform   # another mlpx init name
    python benchmarks/xor_solve_rate.py torch 200                 # nn.Linear's default init
    python benchmarks/xor_solve_rate.py torch 200 xavier_uniform  # torch.nn.init.xavier_uniform_

Prints one JSON line: solved seeds, rate and its standard error sqrt(p (1 - p) / n).
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np

X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
Y = np.array([[0], [1], [1], [0]], dtype=np.float32)
EPOCHS, LR = 5000, 2.0


def solved(out: np.ndarray) -> bool:
    return bool(((out[:, 0] > 0.5) == Y[:, 0].astype(bool)).all())


def run_mlpx(seed: int, init: str | None) -> bool:
    import mlpx

    model = mlpx.MLP([2, 2, 1], activation="sigmoid", output_activation="sigmoid", init=init,
                     seed=seed)
    model.fit(X, Y, loss="mse", optimizer="sgd", lr=LR, epochs=EPOCHS, batch_size=4, verbose=0)
    return solved(model.predict(X))


def run_torch(seed: int, init: str | None) -> bool:
    import torch

    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Sigmoid(), torch.nn.Linear(2, 1),
                              torch.nn.Sigmoid())
    with torch.no_grad():
        for layer in (net[0], net[2]):
            if init == "xavier_uniform":
                torch.nn.init.xavier_uniform_(layer.weight)
            layer.bias.zero_()
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    xt, yt = torch.from_numpy(X), torch.from_numpy(Y)
    for _ in range(EPOCHS):
        opt.zero_grad()
        torch.nn.functional.mse_loss(net(xt), yt).backward()
        opt.step()
    with torch.no_grad():
        return solved(net(xt).numpy())


def main(argv: list[str]) -> None:
    impl, n = argv[0], int(argv[1])
    init = argv[2] if len(argv) > 2 else None
    if impl == "torch":
        import torch

        torch.set_num_threads(1)
    run = run_torch if impl == "torch" else run_mlpx
    k = sum(run(seed, init) for seed in range(n))
    p = k / n
    print(json.dumps({"impl": impl, "init": init or "default", "seeds": n, "solved": k,
                      "rate": p, "se": math.sqrt(p * (1 - p) / n)}))


if __name__ == "__main__":
    main(sys.argv[1:])
