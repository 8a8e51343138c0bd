"""Live updates by Server-Sent Events: the monitor thread publishes, each browser tab listens."""
import asyncio
import json
import threading
import time

from starlette.responses import StreamingResponse

from gateway.web.auth import Session, Sessions

KEEPALIVE_SECONDS = 15
SESSION_CHECK_SECONDS = 1.0   # how soon a stream ends after its session does
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


def session_ended(sessions: Sessions, session: Session) -> str | None:
    """Why the stream's session is over ("expired", "logged out"), or None while it lasts."""
    if session.expires <= time.monotonic():
        return "expired"
    return None if sessions.get(session.token) is session else "logged out"


async def events(request):
    """text/event-stream of `status` (the dashboard snapshot, every second), `message` (each
    message stored) and `object` (each camera object whose upload moved: gateway/web/camera.py).

    It ends when its session does (logout, expiry), with a last `session-ended` event.
    """
    hub = request.app.state.broadcaster
    sessions, session = request.app.state.sessions, request.scope["ek_session"]
    q = hub.subscribe()
    snapshot = request.app.state.monitor.snapshot

    async def stream():
        try:
            if snapshot:
                yield format_event("status", snapshot)
            quiet = 0.0
            while True:
                reason = session_ended(sessions, session)
                if reason:
                    yield format_event("session-ended", {"reason": reason})
                    return
                try:
                    event, data = await asyncio.wait_for(q.get(), SESSION_CHECK_SECONDS)
                except TimeoutError:
                    quiet += SESSION_CHECK_SECONDS
                    if quiet >= KEEPALIVE_SECONDS:
                        quiet = 0.0
                        yield ": keepalive\n\n"
                    continue
                quiet = 0.0
                if event == "close":
                    return
                yield format_event(event, data)
        finally:
            hub.unsubscribe(q)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
