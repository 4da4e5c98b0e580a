"""``@vectorize(target="cuda")`` and ``@guvectorize(..., target="cuda")`` on the cpu backend.

numba's CUDA simulator has no cuda ufunc target: building one fails inside numba-cuda. On the
cpu backend the same decorators build numba's CPU ufunc (or gufunc) of the same function and
signatures instead, called numba's CUDA way: the simulator's device arrays or host arrays in,
``out=``, ``stream=``. On a RocmStream the call is queued there and runs in its order: device
inputs are read when it runs, host inputs at the call (as numba copies them to the device on the
stream); a result numba would copy back to the host is filled once the stream ran the call. With
no stream the call runs on the legacy default stream and returns once it ran, as numba's does.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ...core.callbacks import refuse, running
from ...stream import default_stream
from ...streamcore import StreamCore

__all__ = ["install_simulated_ufuncs", "StreamUFunc"]


def _is_rocmstream(stream: Any) -> bool:
    return isinstance(getattr(stream, "__rocmstreams_core__", None), StreamCore)


class StreamUFunc:
    """numba's CPU ufunc or gufunc, called with the CUDA target's ``stream=`` and device
    arrays (see the module docstring)."""

    def __init__(self, ufunc: Any, fake: type) -> None:
        self.ufunc, self._fake = ufunc, fake
        self.__name__ = getattr(ufunc, "__name__", "ufunc")
        self.__doc__ = getattr(ufunc, "__doc__", None)

    def __call__(self, *args: Any, out: Any = None, stream: Any = 0) -> Any:
        if running:
            refuse(f"the cuda ufunc {self.__name__}")
        fake = self._fake
        if _is_rocmstream(stream):
            target, synchronous = stream, False
        else:
            target, synchronous = default_stream(), True
        # device inputs: zero-copy views, read when the call runs; host inputs: read now
        inputs = [np.asarray(a) if isinstance(a, fake) else np.array(a, copy=True)
                  for a in args]
        result: Any = out
        if out is None:
            with np.errstate(all="ignore"):  # the shape and dtype of the result, from zeros
                probe = self.ufunc(*[np.zeros_like(v) for v in inputs])
            host = np.empty(np.shape(probe), np.asarray(probe).dtype)
            on_device = any(isinstance(a, fake) for a in args)
            result = fake(host, stream=stream if _is_rocmstream(stream) else 0) if on_device \
                else host
        into = np.asarray(result) if isinstance(result, fake) else result
        ufunc = self.ufunc

        def run() -> None:
            ufunc(*inputs, out=into)

        target.launch_host_func(run)
        if synchronous:
            target.record().synchronize()
        return result


class _Build:
    """What numba's ``Vectorize``/``GUVectorize`` take for a target: ``add`` each signature,
    then ``build_ufunc``."""

    def __init__(self, func: Callable[..., Any], signature: str | None, fake: type,
                 **kwargs: Any) -> None:
        self.func, self.signature, self.fake = func, signature, fake
        self.sigs: list[Any] = []

    def add(self, sig: Any = None) -> None:
        self.sigs.append(sig)

    def disable_compile(self) -> None:
        pass

    def build_ufunc(self) -> StreamUFunc:
        import numba
        sigs = [s for s in self.sigs if s is not None]
        if self.signature is None:
            built = numba.vectorize(sigs, target="cpu")(self.func) if sigs else \
                numba.vectorize(self.func)
        else:
            built = numba.guvectorize(sigs, self.signature, target="cpu")(self.func)
        return StreamUFunc(built, self.fake)


def install_simulated_ufuncs(fake: type) -> None:
    """Make ``target="cuda"`` of numba's vectorize and guvectorize build :class:`StreamUFunc`
    (the cpu backend; idempotent)."""
    from numba.np.ufunc.decorators import GUVectorize, Vectorize

    def vectorize(func: Callable[..., Any], **kwargs: Any) -> _Build:
        return _Build(func, None, fake)

    def guvectorize(func: Callable[..., Any], signature: str, **kwargs: Any) -> _Build:
        return _Build(func, signature, fake)

    for registry, build in ((Vectorize.target_registry, vectorize),
                            (GUVectorize.target_registry, guvectorize)):
        registry.ondemand.pop("cuda", None)
        dict.pop(registry, "cuda", None)  # a UniqueDict: an entry is replaced by removing it
        registry["cuda"] = build
