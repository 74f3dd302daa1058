"""Moving trainer weights into the rollout engines: bucket planning and the bounded send loop.

Weights travel through the Ray object store (so across nodes, on CPU and GPU alike) in buckets of
at most `max_bytes`, with at most two buckets in flight. vLLM reloads a layer only once all its
weights have arrived (q/k/v and gate/up are fused there), so a bucket never splits a decoder layer.
"""

from __future__ import annotations

import re
import time
from collections import deque
from typing import Iterable, Sequence

from ledex_rl.errors import UserError

_LAYER = re.compile(r"^(.*?\.layers\.\d+)\.")


class WeightSyncError(UserError, RuntimeError):
    """An engine did not take new weights in time; the message says which step and what to check."""


def layer_key(name: str) -> str:
    """The unit that must travel whole: `model.layers.7` for a decoder layer's weights, else the name."""
    match = _LAYER.match(name)
    return match.group(1) if match else name


def plan_buckets(sizes: Sequence[tuple[str, int]], max_bytes: int) -> list[list[str]]:
    """Group weight names (in order) into buckets of at most `max_bytes`, keeping each layer whole.
    A single layer larger than `max_bytes` gets a bucket of its own."""
    groups: list[tuple[list[str], int]] = []
    for name, nbytes in sizes:
        key = layer_key(name)
        if groups and layer_key(groups[-1][0][-1]) == key:
            groups[-1][0].append(name)
            groups[-1] = (groups[-1][0], groups[-1][1] + nbytes)
        else:
            groups.append(([name], nbytes))
    buckets: list[list[str]] = []
    used = 0
    for names, nbytes in groups:
        if buckets and used + nbytes <= max_bytes:
            buckets[-1] += names
            used += nbytes
        else:
            buckets.append(list(names))
            used = nbytes
    return buckets


def pack(bucket: list) -> list:
    """Tensors -> (name, numpy array, torch dtype name): the object store hands numpy arrays to the
    reader without a copy, torch tensors with one. 2-byte float types travel as int16."""
    import torch

    packed = []
    for name, tensor in bucket:
        flat = tensor.detach().contiguous()
        raw = flat.view(torch.int16) if flat.dtype in (torch.bfloat16, torch.float16) else flat
        packed.append((name, raw.numpy(), str(flat.dtype).removeprefix("torch.")))
    return packed


def unpack(packed: list) -> list:
    """The inverse of `pack`; the tensors share memory with the (read-only) object-store buffers."""
    import warnings

    import torch

    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "non-writable array": only read, then copied by vLLM
        for name, array, dtype in packed:
            tensor = torch.from_numpy(array)
            out.append((name, tensor.view(getattr(torch, dtype)) if tensor.dtype != getattr(torch, dtype) else tensor))
    return out


def send_buckets(buckets: Iterable[list], engines: Sequence, version: int, timeout_s: float) -> dict:
    """Put each bucket in the object store once and have every engine load it; at most two buckets
    are in flight, so the store never holds the whole model. Raises WeightSyncError on a timeout."""
    import ray

    started = time.perf_counter()
    in_flight: deque = deque()
    sent_bytes = count = 0
    for bucket in buckets:
        ref = ray.put(pack(bucket))
        in_flight.append((count, [engine.load_weight_bucket.remote(ref) for engine in engines]))
        sent_bytes += sum(t.numel() * t.element_size() for _, t in bucket)
        count += 1
        if len(in_flight) > 1:
            _wait(*in_flight.popleft(), timeout_s)
    while in_flight:
        _wait(*in_flight.popleft(), timeout_s)
    _wait("final", [engine.finish_weight_update.remote(version) for engine in engines], timeout_s)
    return {"buckets": count, "bytes": sent_bytes, "seconds": time.perf_counter() - started}


def _wait(index, refs: list, timeout_s: float) -> None:
    import ray
    from ray.exceptions import GetTimeoutError, RayActorError

    try:
        ray.get(refs, timeout=timeout_s)
    except GetTimeoutError:
        raise WeightSyncError(
            f"weight sync: a rollout engine did not load bucket {index} within {timeout_s:.0f} s; check the engine "
            f"actor's log in the Ray dashboard, or raise trainer.sync_timeout_s for a very large model"
        ) from None
    except RayActorError as exc:
        raise WeightSyncError(
            f"weight sync: a rollout engine died while loading bucket {index} ({str(exc).splitlines()[0][:160]})"
        ) from None
