"""The checkpoint format: a model's and a training run's state <-> one safetensors file.

    container   safetensors bytes with the mlpx metadata, the whole-file SHA-256, atomic
                writes and safe reading of untrusted files (knows nothing about models)
    schema      strict validation of a file's document and tensors against the state the
                layers declare, and of a record against a built model
    records     what a file holds, parsed (`CheckpointRecord`, `RunRecord`), and the checks of
                a state dict against a model's declaration
    arrays      arrays inside the JSON document <-> named tensors
    writer      a model and its run's state -> a checkpoint file (`Sequential.save`)
    reader      a checkpoint file -> a checked record (`mlpx.load`, `fit(resume_from=...)`,
                `Sequential.load_weights`)

mlpx stores the model's state dict (`Sequential.state_dict()`: parameters `layers.<i>.W`,
nested blocks as `layers.<i>.layers.<j>.W`, then buffers such as BatchNorm running statistics
and Dropout step counters), the optimiser's state arrays (`optimizer.state.<k>.<name>`) and the
arrays of callback state (`callbacks.<k>.state.<name>...`, e.g. EarlyStopping's best weights):
every array is stored under the name of its place in the document. The `mlpx` document holds
the architecture (every layer's class and config), dtype, seed, the state dict's parameter and
buffer names, loss, optimiser config and scalar state, and `training`: the run's position
(`epoch` completed, `fit_index`, `step` and `loss_sum` within an interrupted epoch,
`stopped`), the training history and each callback's state (`callbacks`: class and state, in
order).

Why this format: loading never executes code (no pickle), any safetensors reader (Python, Rust,
JS) can open the arrays, and the file is a single self-describing blob that is cheap to write
atomically.

Imports flow one way: the model and the training loop use this package; nothing here imports
them (the model and the trainer are passed in and used through their public methods).
"""

from .container import CheckpointError, OldCheckpointWarning

__all__ = ["CheckpointError", "OldCheckpointWarning"]
