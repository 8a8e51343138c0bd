"""Which Host names the admin page answers to, and whose X-Forwarded-* headers it believes.

A page on another site can have its own name resolve to this gateway (DNS rebinding) and then
read the admin page as its own origin; its requests still carry that name in Host. So only
this gateway's names are served: web_host, localhost, 127.0.0.1, ::1, the machine's hostname
and hostname.local, and web_allowed_hosts. An IP address is always served: a rebinding needs
a name the attacker's DNS answers for, and an IP address is not one.
"""
import ipaddress
import socket

from gateway.config import Config


def allowed_hosts(cfg: Config) -> set[str]:
    """The names (lower case, no trailing dot) the admin page answers to."""
    extra = cfg.web_allowed_hosts
    if not (isinstance(extra, list) and all(isinstance(h, str) for h in extra)):
        raise ValueError("web_allowed_hosts must be a list of names, e.g. "
                         "[\"pi.example.org\"], not %r" % (extra,))
    me = socket.gethostname()
    return {normal(h) for h in [cfg.web_host, "localhost", "127.0.0.1", "::1", me,
                                me + ".local", *extra] if h.strip()}


def trusted_proxies(cfg: Config) -> list[str]:
    """web_trusted_proxies, checked: each an IP address or network."""
    proxies = cfg.web_trusted_proxies
    if not (isinstance(proxies, list) and all(isinstance(p, str) for p in proxies)):
        raise ValueError("web_trusted_proxies must be a list of your proxy's addresses, e.g. "
                         "[\"127.0.0.1\"], not %r" % (proxies,))
    for p in proxies:
        try:
            ipaddress.ip_network(p) if "/" in p else ipaddress.ip_address(p)
        except ValueError:
            raise ValueError("web_trusted_proxies: %r is not an IP address or network "
                             "(e.g. \"127.0.0.1\" or \"10.0.0.0/8\")" % p)
    return proxies


def normal(name: str) -> str:
    name = name.strip().lower().rstrip(".")
    return name[1:-1] if name.startswith("[") and name.endswith("]") else name


def host_of(header: str) -> str:
    """The name in a Host header value: no port, no brackets around IPv6, lower case."""
    if header.startswith("["):
        return normal(header[1:].split("]", 1)[0])
    return normal(header.rsplit(":", 1)[0] if header.count(":") == 1 else header)


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


class HostGuard:
    """Answers 400 to a request whose Host is not one of `hosts` nor an IP address."""

    def __init__(self, app, hosts: set[str]):
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            header = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            name = host_of(header)
            if not (name in self.hosts or is_ip(name)):
                await refuse(send, header)
                return
        await self.app(scope, receive, send)


async def refuse(send, header: str) -> None:
    if header:
        text = ("Host %r is not a name of this gateway's admin page. If you reach the page by "
                "this name, add it to web_allowed_hosts in the gateway's config (other names "
                "are refused: DNS rebinding).\n" % header[:100])
    else:
        text = "no Host header: send the name you reach the admin page by\n"
    body = text.encode()
    await send({"type": "http.response.start", "status": 400, "headers": [
        (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"%d" % len(body)),
        (b"x-content-type-options", b"nosniff"), (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})
