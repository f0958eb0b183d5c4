# The C crossing (see _crossing.c); built only with the compiled data path.
from collections.abc import Callable, Sequence

def bind(
    call: int, define: int, trap_new: int, set_deadline: int, increment_epoch: int, /
) -> None: ...
def call(
    ctx: int,
    func: int,
    buf: int,
    n: int,
    trap_slot: int,
    args: Sequence[int],
    deadline: int,
    keep_gil: bool,
    /,
) -> int | tuple[int, int]: ...
def define(
    linker: int,
    module: bytes,
    name: bytes,
    functype: int,
    impl: Callable[..., int | None],
    owner: object,
    on_error: Callable[[str, BaseException], int],
    label: str,
    fault_type: type[BaseException],
    fault: int,
    nparams: int,
    returns: bool,
    /,
) -> int: ...

class _Ticker: ...

def ticker_start(engine: int, interval_us: int, cell: int, keep: object, /) -> _Ticker: ...
def ticker_stop(ticker: _Ticker, /) -> None: ...

class Memory:
    def remap(self, base: int, size: int, /) -> None: ...
    def read(self, ptr: int, n: int, /) -> bytes | None: ...
    def read_u32(self, ptr: int, /) -> int | None: ...
    def write(self, ptr: int, data: bytes | bytearray | memoryview, /) -> bool: ...
    def write_u32(self, ptr: int, value: int, /) -> bool: ...
    def write_u64(self, ptr: int, value: int, /) -> bool: ...
