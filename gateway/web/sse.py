"""Live updates by Server-Sent Events: the monitor thread publishes, each browser tab listens."""
import asyncio
import json
import threading

from starlette.responses import StreamingResponse

KEEPALIVE_SECONDS = 15
QUEUE_MAX = 1000


class Broadcaster:
    """Thread-safe fan-out of (event, data) to every subscribed asyncio queue."""

    def __init__(self):
        self.lock = threading.Lock()
        self.queues = {}

    def subscribe(self):
        q = asyncio.Queue(QUEUE_MAX)
        with self.lock:
            self.queues[q] = asyncio.get_running_loop()
        return q

    def unsubscribe(self, q):
        with self.lock:
            self.queues.pop(q, None)

    def publish(self, event, data):
        with self.lock:
            targets = list(self.queues.items())
        for q, loop in targets:
            try:
                loop.call_soon_threadsafe(_offer, q, (event, data))
            except RuntimeError:  # that loop has closed
                self.unsubscribe(q)

    def close(self):
        self.publish("close", None)


def _offer(q, item):
    if not q.full():  # a stalled tab misses updates rather than growing memory
        q.put_nowait(item)


def format_event(event, data):
    return "event: %s\ndata: %s\n\n" % (event, json.dumps(data, separators=(",", ":")))


async def events(request):
    """text/event-stream of `status` (the dashboard snapshot, every second) and `message`."""
    hub = request.app.state.broadcaster
    q = hub.subscribe()
    snapshot = request.app.state.monitor.snapshot

    async def stream():
        try:
            if snapshot:
                yield format_event("status", snapshot)
            while True:
                try:
                    event, data = await asyncio.wait_for(q.get(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                if event == "close":
                    return
                yield format_event(event, data)
        finally:
            hub.unsubscribe(q)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
