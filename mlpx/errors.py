"""Exceptions raised by mlpx."""


class BackendUnavailableError(RuntimeError):
    """A backend was asked for that this machine cannot provide (no CuPy, no GPU)."""


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss; the model keeps its last finite weights."""
