"""Every exception interpretome raises, in one place (importable from every layer).

The base classes are the builtin ones users already catch (``ValueError`` for bad input,
``RuntimeError`` for a run that cannot proceed), so ``except ValueError`` keeps working; the CLI
turns each into a one-line message and exit status 2.

=====================  ==============  ==================================================
exception              base            raised when
=====================  ==============  ==================================================
InputError             ValueError      an input file or value is malformed
ModelSpecError         ValueError      a model spec cannot be resolved or does not fit
ModelOutputError       ValueError      a model's output disagrees with the declared targets
NonFiniteOutputError   ModelOutputError  a NaN/inf model output (never stored as a result)
JobFileError           ValueError      a job file is invalid (one line per problem)
StoreError             RuntimeError    a store cannot be written or read as asked
StoreLockedError       RuntimeError    another live run is writing the same store
ExportError            RuntimeError    a result cannot be exported as asked
ClusterError           RuntimeError    a cluster cannot be started or reached as asked
=====================  ==============  ==================================================
"""

from __future__ import annotations


class InputError(ValueError):
    """An input file or value is malformed; the message names where and how to fix it."""


class ModelSpecError(ValueError):
    """A model spec cannot be resolved (bad factory path, missing file, bad option)."""


class ModelOutputError(ValueError):
    """A model's output disagrees with the declared targets, or is not finite."""


class NonFiniteOutputError(ModelOutputError):
    """A NaN or infinite value in a model output (or in a result computed from it).

    ``row`` is the batch row (or, once re-raised by ``outputs_of``, the row of the caller's input),
    ``target`` the output's name, ``value`` the bad value as text ("nan", "inf", "-inf"), ``item``
    the sequence or sample it belongs to once a task has named it (None before), ``what`` the kind
    of value ("model output", "attribution").
    """

    def __init__(self, row: int, target: str, value: str, item: str | None = None, what: str = "model output"):
        self.row, self.target, self.value, self.item, self.what = int(row), str(target), str(value), item, what
        where = item if item is not None else f"batch row {self.row}"
        super().__init__(
            f"{where}: the {what} for target {self.target!r} is {self.value}. Non-finite model outputs are never "
            f"stored as results: fix the model, its weights or its inputs, or pass allow_nonfinite=True "
            f"(--allow-nonfinite) to keep them as they are")

    def __reduce__(self):  # picklable across dask workers despite the keyword constructor
        return (type(self), (self.row, self.target, self.value, self.item, self.what))


class JobFileError(ValueError):
    """A job file is invalid; ``problems`` holds one ``file:line: message`` string per problem."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        n = len(self.problems)
        head = "the job file has 1 problem" if n == 1 else f"the job file has {n} problems"
        super().__init__(head + ":\n  " + "\n  ".join(self.problems))

    def __reduce__(self):
        return (type(self), (self.problems,))


class StoreError(RuntimeError):
    """A store cannot be written as asked (conflicting parameters, unwritable location ...)."""


class StoreLockedError(RuntimeError):
    """Another live run is writing the same store."""


class ExportError(RuntimeError):
    """A result cannot be exported as asked; the message says why and how to fix it."""


class ClusterError(RuntimeError):
    """A cluster cannot be started or reached as asked."""
