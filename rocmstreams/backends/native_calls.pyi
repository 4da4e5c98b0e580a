"""Types of the compiled hot calls (native_calls.c); see rocmstreams.backends.native."""

NOT_CALLED: int

class HandleCall:
    """``HandleCall(fn, handle)()`` makes the C call ``int fn(handle)`` without the GIL."""

    def __init__(self, fn: int, handle: int) -> None: ...
    def __call__(self) -> int: ...

class HandlePairCall:
    """``HandlePairCall(fn, second)(first)`` makes ``int fn(first, second)`` without the GIL."""

    def __init__(self, fn: int, second: int) -> None: ...
    def __call__(self, first: int, /) -> int: ...

class KernelLaunch:
    """``KernelLaunch(fn, function, params, extra)(gx, gy, gz, bx, by, bz, shared, stream)``
    makes ``fn(function, gx, gy, gz, bx, by, bz, shared, stream, params, extra)`` without the
    GIL (cuLaunchKernel's and hipModuleLaunchKernel's signature)."""

    def __init__(self, fn: int, function: int, params: int, extra: int) -> None: ...
    def __call__(self, gx: int, gy: int, gz: int, bx: int, by: int, bz: int, shared: int,
                 stream: int, /) -> int: ...

def set_enabled(flag: bool, /) -> None: ...
def enabled() -> bool: ...
