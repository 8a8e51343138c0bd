"""The gateway's import graph, read from the source (nothing is imported): no cycles, imports
point down the layers of docs/architecture.md ("Gateway"), and from agent/ only the shared
wire vocabulary, never a device transport."""
import ast
import os

import pytest

pytestmark = pytest.mark.unit

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GATEWAY = os.path.join(REPO, "gateway")

# What gateway/ may take from agent/: the wire vocabulary (topics, COSE and envelope labels,
# object and manifest constants, the CBOR codec, the reading layout), the device identity
# (keygen), and the OTA message format the gateway sends. Not a device transport
# (agent.mqtt, agent.mqtt_paho, agent.modem) or a device loop.
AGENT_ALLOWED = {"agent.proto", "agent.cbor", "agent.cose", "agent.objects", "agent.readings",
                 "agent.identity", "agent.ota", "agent.ota_receive", "agent.config_update"}
# The simulated devices the demo runs; nothing else in the gateway starts devices.
AGENT_ALLOWED_FROM = {"gateway.demo": {"agent.sim", "agent.simcamera"}}

# docs/architecture.md's table: gateway package -> the gateway packages it may import
# (besides itself). Top-level modules: config (the gateway's settings), localhost (free
# ports, waiting for one) and health (thread supervision, component states) are leaves
# anyone may use.
SHARED = {"config", "localhost", "health"}
EVERYTHING = None
MAY_IMPORT = {
    "web": EVERYTHING, "cli": EVERYTHING,
    "service": EVERYTHING, "demo": EVERYTHING, "__main__": EVERYTHING, "__init__": set(),
    "workers": {"store"},
    "integrations": {"alerts", "store", "mqtt", "wire"},
    "alerts": {"store"},
    "updates": {"ingest", "store"},
    "ingest": {"anchor", "store", "mqtt", "wire"},
    "network": {"keeper", "anchor", "store", "chain", "wire"},
    "keeper": {"store", "chain", "wire"},
    "anchor": {"store", "chain", "wire"},
    "owner": {"wire"},
    "chain": {"wire"},
    "store": {"wire"},
    "mqtt": {"wire"},
    "wire": set(),
    "config": set(), "localhost": set(), "health": set(),
}
# The top of the stack, one layer: imported only by web/ and cli/ (cli/admin.py sets the admin
# page's password with web/auth.py) and these entry points.
TOP = {"web", "cli"}
TOP_IMPORTERS = {"gateway.service", "gateway.demo", "gateway.__main__"}


def module_name(path):
    rel = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
    return rel[:-len(".__init__")] if rel.endswith(".__init__") else rel


def gateway_modules():
    found = {}
    for parent, dirs, files in os.walk(GATEWAY):
        dirs[:] = sorted(d for d in dirs if os.path.exists(os.path.join(parent, d, "__init__.py")))
        for f in sorted(files):
            if f.endswith(".py"):
                found[module_name(os.path.join(parent, f))] = os.path.join(parent, f)
    return found


def imports(name, path, known):
    """(imported module, line) for every import in the file, lazy ones included. `from P
    import x` is P.x when that is a module, else P (a package: its __init__)."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    is_pkg = path.endswith("__init__.py")
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".")
                anchor = parts if is_pkg else parts[:-1]
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for a in node.names:
                sub = base + "." + a.name
                out.append((sub if sub in known or _is_agent_module(sub) else base, node.lineno))
    return out


def _is_agent_module(name):
    return name.startswith("agent.") and os.path.exists(
        os.path.join(REPO, *name.split(".")) + ".py")


def graph():
    known = gateway_modules()
    edges = {}
    for name, path in known.items():
        for target, line in imports(name, path, known):
            if target == "gateway" or target.startswith("gateway.") or target.startswith("agent"):
                edges.setdefault(name, {}).setdefault(target, line)
    return known, edges


def layer(module):
    """gateway.store.database -> store; gateway.demo -> demo."""
    return module.split(".")[1] if "." in module else "__init__"


def where(edges, a, b):
    return "%s -> %s (%s.py:%d)" % (a, b, a.replace(".", "/"), edges[a][b])


def test_graph_is_read():
    known, edges = graph()
    assert "gateway.wire.protocol" in known and "gateway.store.database" in known
    assert "gateway.wire.protocol" in edges.get("gateway.ingest.pipeline", {})


def test_no_import_cycles_among_gateway_modules():
    known, edges = graph()
    succ = {a: sorted(b for b in bs if b in known and b != a) for a, bs in edges.items()}
    cycles, state, stack = [], {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in succ.get(node, ()):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(known):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_gateway_takes_only_the_wire_vocabulary_from_agent():
    _, edges = graph()
    bad = [where(edges, a, b) for a, bs in sorted(edges.items()) for b in sorted(bs)
           if (b == "agent" or b.startswith("agent."))
           and b not in AGENT_ALLOWED | AGENT_ALLOWED_FROM.get(a, set())]
    assert not bad, "gateway/ imports from agent/ beyond the wire vocabulary:\n" + "\n".join(bad)


def test_no_device_transport_in_the_gateway():
    assert "agent.mqtt_paho" not in AGENT_ALLOWED and "agent.mqtt" not in AGENT_ALLOWED
    _, edges = graph()
    bad = [where(edges, a, b) for a, bs in edges.items() for b in bs
           if b in ("agent.mqtt_paho", "agent.mqtt", "agent.modem")]
    assert not bad, bad


def upward(rule_layers, allowed):
    _, edges = graph()
    bad = []
    for a, bs in sorted(edges.items()):
        if layer(a) not in rule_layers:
            continue
        for b in sorted(bs):
            if b.startswith("gateway.") and layer(b) != layer(a) and not allowed(a, b):
                bad.append(where(edges, a, b))
    return bad


def test_wire_imports_no_other_gateway_package():
    bad = upward({"wire"}, lambda a, b: False)
    assert not bad, "gateway/wire imports gateway packages:\n" + "\n".join(bad)


def test_store_imports_only_wire():
    bad = upward({"store"}, lambda a, b: layer(b) == "wire")
    assert not bad, "gateway/store imports more than wire:\n" + "\n".join(bad)


def test_web_and_cli_are_imported_only_by_themselves_and_the_entry_points():
    _, edges = graph()
    bad = [where(edges, a, b) for a, bs in sorted(edges.items()) for b in sorted(bs)
           if b.startswith("gateway.") and layer(b) in TOP and layer(a) not in TOP
           and a not in TOP_IMPORTERS]
    assert not bad, "web/ or cli/ imported from below:\n" + "\n".join(bad)


def test_every_package_imports_only_what_the_architecture_table_allows():
    known, _ = graph()
    assert {layer(m) for m in known} <= set(MAY_IMPORT), "a gateway package the table lacks"
    bad = upward(set(MAY_IMPORT), lambda a, b: MAY_IMPORT[layer(a)] is EVERYTHING
                 or layer(b) in MAY_IMPORT[layer(a)] | SHARED)
    assert not bad, "imports the table in docs/architecture.md does not allow:\n" + "\n".join(bad)
