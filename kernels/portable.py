"""Where the kernel dialects differ, one name for each: the shipped kernels call these.

``atomic_add(array, index, value)`` adds ``value`` to ``array[index]`` atomically and returns the
old value, as ``cuda.atomic.add`` does, under each compiler of the ``cuda`` module:

- numba-cuda: an intrinsic that numba-cuda types and lowers as its own ``cuda.atomic.add``
  (the same PTX as calling it directly);
- Numba's CUDA simulator: the simulator's own ``atomic.add`` (one process-wide lock per operation);
- numba-hip, which has no array form (its ``hip.atomic.add`` wraps HIP's scalar
  ``atomicAdd(T*, T)`` and takes the pointer as an output): an intrinsic that emits LLVM's
  ``atomicrmw add`` (``fadd`` for floats) on the element's address with relaxed (monotonic)
  ordering, as numba-cuda lowers its integer atomics. int32, uint32, int64, uint64, float32 and
  float64 arrays; an integer index (1-D) or a tuple of ``ndim`` integers.
"""
from __future__ import annotations

from typing import Any

from . import cuda

__all__ = ["atomic_add", "dialect"]


def dialect(module: Any) -> str:
    """The compiler behind a ``numba.cuda``-dialect module: numba-hip, simulator or numba-cuda."""
    if getattr(module, "__name__", "").split(".")[:2] == ["numba", "hip"]:
        return "numba-hip"
    if getattr(module.is_available, "__module__", "").startswith("numba.cuda.simulator"):
        return "simulator"
    return "numba-cuda"


def _hip_atomic_add() -> Any:
    from numba.core import cgutils, types
    from numba.core.typing import signature
    from numba.hip.extending import intrinsic  # type: ignore[import-not-found, unused-ignore]

    supported = (types.int32, types.uint32, types.int64, types.uint64, types.float32,
                 types.float64)

    @intrinsic
    def atomic_add(typingctx: Any, array: Any, index: Any, value: Any) -> Any:
        if not isinstance(array, types.Array) or array.dtype not in supported:
            return None
        index_type: Any
        if isinstance(index, types.Integer) and array.ndim == 1:
            index_type = types.intp
        elif (isinstance(index, (types.UniTuple, types.Tuple)) and len(index) == array.ndim
              and all(isinstance(i, types.Integer) for i in index.types)):
            index_type = types.UniTuple(types.intp, array.ndim)
        else:
            return None
        if not isinstance(value, (types.Integer, types.Float, types.Boolean)):
            return None

        def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            array_type, index_type, _ = sig.args
            array_value, index_value, add = args
            if isinstance(index_type, types.BaseTuple):
                indices = cgutils.unpack_tuple(builder, index_value, len(index_type))
            else:
                indices = [index_value]
            data = context.make_array(array_type)(context, builder, array_value)
            pointer = cgutils.get_item_pointer(context, builder, array_type, data, indices,
                                               wraparound=True)
            op = "fadd" if isinstance(array_type.dtype, types.Float) else "add"
            return builder.atomic_rmw(op, pointer, add, "monotonic")

        # the call's arguments are cast to these types (index to intp, value to the dtype)
        return signature(array.dtype, array, index_type, array.dtype), codegen

    return atomic_add


def _simulator_atomic_add() -> Any:
    from numba.cuda.simulator.kernelapi import FakeCUDAAtomic
    return FakeCUDAAtomic().add


def _cuda_atomic_add() -> Any:
    # An intrinsic, not a device function: numba-cuda compiles a device function for the current
    # device while typing its caller, so kernels calling one could not be compiled without a GPU
    # (cuda.compile_ptx). Typing and lowering are numba-cuda's own cuda.atomic.add.
    from numba.core import types
    from numba.cuda.extending import intrinsic

    @intrinsic
    def atomic_add(typingctx: Any, array: Any, index: Any, value: Any) -> Any:
        atomic = typingctx.resolve_getattr(types.Module(cuda), "atomic")
        function = typingctx.resolve_getattr(atomic, "add")
        sig = typingctx.resolve_function_type(function, (array, index, value), {})
        if sig is None:
            return None

        def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            return context.get_function(function, sig)(builder, args)

        return sig, codegen

    return atomic_add


atomic_add = {"numba-hip": _hip_atomic_add, "simulator": _simulator_atomic_add,
              "numba-cuda": _cuda_atomic_add}[dialect(cuda)]()
