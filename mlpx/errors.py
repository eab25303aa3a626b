"""Exceptions raised by mlpx."""


class BackendUnavailableError(RuntimeError):
    """A backend was asked for that this machine cannot provide (no CuPy, no GPU)."""


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss; the model keeps its last finite weights."""


class UnscaledInputWarning(UserWarning):
    """`fit` saw inputs whose scale makes training slow or unstable (|X| >> 1, or feature
    scales far apart); standardise them (mlpx.Standardizer, scikit-learn's StandardScaler)."""


__all__ = ["BackendUnavailableError", "NonFiniteLossError", "UnscaledInputWarning"]
