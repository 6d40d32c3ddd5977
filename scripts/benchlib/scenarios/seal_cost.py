"""What e2e-v1 sealing costs per request and per streamed chunk, in microseconds, timed in-process.

timeit-style: each operation runs `number` times per repeat, `repeat` times; the per-call time of each
repeat is kept and the median (and the minimum, timeit's favourite) reported. Operations that consume
their input (opening a request enters its id in the replay cache; opening a stream's first chunk
derives its key) get freshly built inputs, made outside the timed loops.

Per request (fixed): the client seals (SealedRequest.build), the device opens (open_request with the
gateway's real PrekeyRing, AllowList and ReplayCache, called as SealedGateway.open calls it) and sets up
the response stream (ResponseSealer: key derivation), and the client opens the first chunk (its key
derivation). Per chunk: the device seals one token chunk and the client opens it.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from typing import Any, Callable, Sequence, TypeVar

from benchlib.prompts import chat_messages
from benchlib.scenarios.base import Log, Scenario
from benchlib.settings import BenchSettings
from benchlib.targets.base import SEAL_MICRO, Target
from benchlib.targets.edged_socket import chat_body
from benchlib.targets.seal_micro import DEVICE_ID, PREFIX, SealMicroTarget

T = TypeVar("T")


def per_call_us(run_batch: Callable[[int], object], number: int, repeat: int) -> dict[str, float]:
    """`run_batch(i)` runs batch i (`number` calls); µs per call: median and min over the repeats."""
    times = []
    for index in range(repeat):
        started = time.perf_counter_ns()
        run_batch(index)
        times.append((time.perf_counter_ns() - started) / 1000 / number)
    return {"median_us": statistics.median(times), "min_us": min(times), "number": number, "repeat": repeat}


def batches(items: Sequence[T], number: int) -> list[Sequence[T]]:
    return [items[i:i + number] for i in range(0, len(items), number)]


class SealCostScenario(Scenario):
    name = "seal-cost"
    requires = frozenset({SEAL_MICRO})

    def run(self, target: Target, settings: BenchSettings, log: Log) -> dict[str, Any]:
        assert isinstance(target, SealMicroTarget)
        from edged.crypto.client import SealedRequest  # noqa: PLC0415
        from edged.crypto.envelope import open_request  # noqa: PLC0415
        from edged.messages import Completion  # noqa: PLC0415
        from edged.topics import DeviceTopics  # noqa: PLC0415

        gateway, key = target.gateway, target.client_key
        number, repeat = settings.seal_number, settings.seal_repeat
        request_topic = DeviceTopics("edged", DEVICE_ID).request
        resp_topic = f"{PREFIX}/{os.urandom(6).hex()}"
        body = json.dumps(chat_body(chat_messages("essay-rivers"), settings.tokens)).encode()
        identity, prekey = gateway.identity.public_bytes, gateway.prekeys.current_info()
        # One streamed token chunk as the daemon sends it (JSON without padding, the default).
        chunk_obj = Completion(request_id=os.urandom(8).hex(), model="SmolLM2-135M-Instruct", created=int(time.time()),
                               stream=True).chunk(" river")
        chunk = json.dumps(chunk_obj, separators=(",", ":"), ensure_ascii=False).encode()

        def seal() -> Any:
            return SealedRequest.build(client_key=key, prekey=prekey, identity_pub=identity,
                                       request_topic=request_topic, resp_topic=resp_topic, body=body)

        def device_open(data: bytes) -> Any:
            # Exactly SealedGateway.open's call, minus its logging of rejects.
            return open_request(data, device_id=gateway.device_id, request_topic=request_topic,
                                identity_pub=identity, prekeys=gateway.prekeys, allow_list=gateway.allow_list,
                                replay=gateway.replay, now=time.time(), window=gateway.settings.window,
                                max_size=gateway.settings.max_request_bytes,
                                clock_synchronised=gateway.clock.synchronised(time.monotonic()),
                                clock_policy=gateway.settings.clock_policy)

        results: dict[str, dict[str, float]] = {}
        results["client: seal request"] = per_call_us(lambda _: [seal() for _ in range(number)], number, repeat)
        requests = [seal() for _ in range(number * repeat)]
        request_batches = batches(requests, number)
        opened: list[Any] = []
        results["device: open request"] = per_call_us(
            lambda i: opened.extend(device_open(r.data) for r in request_batches[i]), number, repeat)
        opened_batches = batches(opened, number)
        sealers: list[Any] = []
        results["device: set up response stream"] = per_call_us(
            lambda i: sealers.extend(o.response_sealer() for o in opened_batches[i]), number, repeat)
        firsts = batches([(r.opener, s.seal(chunk, final=False)) for r, s in zip(requests, sealers)], number)
        results["client: open first chunk (incl. key derivation)"] = per_call_us(
            lambda i: [opener.open(data) for opener, data in firsts[i]], number, repeat)
        # One long stream for the per-chunk costs: seq 0 was sealed above, so these are chunks 1, 2, ...
        stream_request, stream_sealer = requests[0], sealers[0]
        sealed_chunks: list[bytes] = []
        results["device: seal chunk"] = per_call_us(
            lambda _: sealed_chunks.extend(stream_sealer.seal(chunk, final=False) for _ in range(number)),
            number, repeat)
        chunk_batches = batches(sealed_chunks, number)
        opener = stream_request.opener   # already past its first chunk: no key derivation left
        results["client: open chunk"] = per_call_us(
            lambda i: [opener.open(data) for data in chunk_batches[i]], number, repeat)

        fixed = sum(results[name]["median_us"] for name in ("client: seal request", "device: open request",
                                                            "device: set up response stream",
                                                            "client: open first chunk (incl. key derivation)"))
        per_chunk = results["device: seal chunk"]["median_us"] + results["client: open chunk"]["median_us"]
        for name, value in results.items():
            log(f"    {name:<50} {value['median_us']:8.1f} µs (min {value['min_us']:.1f})")
        log(f"    per request {fixed:.0f} µs, per chunk {per_chunk:.1f} µs, "
            f"a {settings.tokens}-token answer {fixed + settings.tokens * per_chunk:.0f} µs")
        return {"operations": results, "per_request_us": fixed, "per_chunk_us": per_chunk,
                "answer_tokens": settings.tokens, "per_answer_us": fixed + settings.tokens * per_chunk,
                "request_body_bytes": len(body), "sealed_request_bytes": len(requests[0].data),
                "chunk_plaintext_bytes": len(chunk), "sealed_chunk_bytes": len(sealed_chunks[0]),
                "clock_policy": gateway.settings.clock_policy}
