"""`edgekeep audit --remote PEER --data-dir DIR [--owner NAME] [--samples N] [--rpc URL]`: audit
this gateway's storage agreement with a peer from the chain and the peer's answers alone.

What it trusts, exactly (docs/keeper.md, "Audits across peers"):

- the chain at --rpc (default: the data dir's local anvil), at the contract addresses of the
  data dir's chain/deployment.json: the owner's latest network epoch and its root
  (StorageNetwork.latestEpoch, commitOf), and the seed block's hash;
- nothing the peer says that does not prove into that root: each answer goes through
  gateway/network/audit.py's `check` (protocol.check_answer, the one check). The slots are
  drawn from the agreement's slot count, which the chain holds only inside the root: the
  count is the one the peer's answer to slot 0 carries, and it stands because it is part of
  the 72-byte agreement leaf each good answer proves into the root on chain; every answer
  must carry that same count. A released slot counts only with the owner's signed DELETE;
- of the data dir: the identity key (it signs the requests, the peer answers its owner only)
  and the peers table for the peer's endpoint (else the endpoint the peer registered on
  chain). The TLS session is pinned to the peer's name, so a wrong endpoint can only make the
  peer unreachable. It reads no placements and no commit rows, and records nothing.

One line per challenge, then a verdict; exit 0 passed, 1 failed, 2 usage or unreachable.
"""
import contextlib
import json
import os
import sys

from gateway.chain.reader import ChainReader
from gateway.cli.common import open_store
from gateway.health import unreachable
from gateway.keeper.challenges import seed_block
from gateway.network import audit as remote
from gateway.network import identity as netid
from gateway.network import protocol
from gateway.network.protocol import Refused

USAGE, FAILED, OK = 2, 1, 0


def is_peer(remote_arg):
    """True if --remote names a peer (a name or its prefix), not a gateway's API URL."""
    return not remote_arg.startswith(("http://", "https://"))


def run(args):
    """`audit --remote PEER`: the exit status."""
    try:
        return _run(args)
    except Usage as e:
        print("error: %s" % e, file=sys.stderr)
        return USAGE


class Usage(Exception):
    pass


def _run(args):
    if not args.data_dir:
        raise Usage("--remote PEER needs --data-dir: the gateway whose identity signs the "
                    "challenges and owns the agreement")
    if args.all or args.object:
        raise Usage("--all and --object audit a local --data-dir")
    if args.samples < 1:
        raise Usage("--samples must be at least 1")
    key = os.path.join(netid.directory(args.data_dir), netid.KEY_FILE)
    if not os.path.exists(key):
        raise Usage("%s has no network identity (%s): start the gateway once" % (
            args.data_dir, key))
    me = netid.Identity.load_or_create(args.data_dir)
    owner = _owner(me, args.owner)
    peers = open_store(args.data_dir).peers
    try:
        with reader(args.data_dir, args.rpc) as chain:
            name, endpoint = _peer(peers, chain, args.remote)
            return audit(me, owner, name, endpoint, chain, args.samples)
    except Usage:
        raise
    except Exception as e:
        if not unreachable(e):
            raise
        raise Usage("the chain does not answer (%s)" % e) from None


@contextlib.contextmanager
def reader(data_dir, rpc):
    """A ChainReader of the data dir's deployment (read only: nothing is deployed or sent)
    at `rpc`, or at the data dir's local anvil (started for the command if need be)."""
    from gateway.chain import node
    path = os.path.join(data_dir, "chain", "deployment.json")
    try:
        with open(path) as f:
            deployment = json.load(f)
    except FileNotFoundError:
        raise Usage("%s has no chain deployment (%s)" % (data_dir, path)) from None
    if "StorageNetwork" not in deployment.get("contracts", {}):
        raise Usage("%s names no StorageNetwork contract: the gateway has not committed to the "
                    "network on this chain" % path)
    started = not rpc and node.running_url(data_dir) is None
    url = rpc or node.ensure_running(data_dir)
    try:
        chain = ChainReader(url, deployment["contracts"])
        if chain.chain_id != deployment.get("chain_id", chain.chain_id):
            raise Usage("%s is chain %d, the deployment is on chain %d" % (
                url, chain.chain_id, deployment["chain_id"]))
        yield chain
    finally:
        if started:
            node.stop_running(data_dir)


def _owner(me, owner):
    if owner is None or me.name.startswith(owner.lower()):
        return me.public
    raise Usage("a provider answers the challenges of its owner's agreement only: --owner "
                "must be this data dir's identity %s (audit another owner's agreement from "
                "that owner's data dir)" % me.short)


def _peer(peers, chain, prefix):
    found = peers.find(prefix)
    if len(found) > 1:
        raise Usage("%s names %d peers (%s): give more of the name" % (
            prefix, len(found), ", ".join(p.short for p in found)))
    if found:
        return found[0].name, found[0].endpoint
    try:
        name = protocol.check_name(prefix.lower())
    except Refused:
        raise Usage("no peer %s here (edgekeep peer list); a peer not paired here needs its "
                    "whole name" % prefix) from None
    reg = chain.gateway_of(bytes.fromhex(name))
    if reg is None or not reg["endpoint"]:
        raise Usage("peer %s is neither paired here nor registered on chain" % name[:16])
    return name, reg["endpoint"]


def audit(me, owner, provider, endpoint, chain: ChainReader, samples, client=None):
    """Audit owner's agreement with provider; print one line per challenge and the verdict;
    the exit status."""
    from gateway.network.client import PeerClient
    client = client or PeerClient(me, provider, endpoint)
    epoch = chain.latest_network_epoch(owner)
    if not epoch:
        raise Usage("owner %s has no network epoch on chain yet" % owner.hex()[:16])
    root = chain.commit_of(owner, epoch)["root"]
    if chain.agreement_of(owner, bytes.fromhex(provider)) is None:
        raise Usage("owner %s has no agreement with %s on chain" % (owner.hex()[:16],
                                                                  provider[:16]))
    block = seed_block(chain)
    print("peer %s at %s; owner %s; network epoch %d, root %s on chain" % (
        provider[:16], endpoint, owner.hex()[:16], epoch, root.hex()))
    print("seed: block %d, hash %s" % (block["number"], block["hash"]))

    # The count: the peer's, from its answer to slot 0; it stands only if an answer proves it.
    answer, error = remote.ask(client, 0)
    if error is not None:
        print("%s probe slot 0: %s: %s" % ("UNREACHABLE" if remote.transient(error) else
                                           "FAILED ", error.reason, remote.peer_error(error)))
        print("verdict: %s (nothing checked)" % ("UNREACHABLE" if remote.transient(error)
                                                 else "FAILED"))
        return USAGE if remote.transient(error) else FAILED
    count = answer.get("count") if isinstance(answer, dict) else None
    if not isinstance(count, int) or count < 1:
        print("FAILED  probe slot 0: the answer names no slot count (%r)" % (count,))
        print("verdict: FAILED")
        return FAILED
    target = remote.Target(owner, provider, epoch, root, count)
    probe = remote.judge(answer, 0, target)
    print("count: %d slots, as the peer's answer to slot 0 says (%s)" % (
        count, "proven into the root on chain" if probe.outcome.outcome == "ok" else
        "that answer: %s" % probe.outcome.detail))
    results = remote.challenge(client, target, protocol.draw_slots(
        bytes.fromhex(block["hash"][2:]), provider, count, samples))
    for r in results:
        print("%-7s slot %d: %s" % (r.outcome.outcome.upper(), r.slot, r.outcome.detail))
    failed = [r for r in results if r.outcome.outcome == "failed"]
    ok = sum(r.outcome.outcome == "ok" for r in results)
    skipped = len(results) - ok - len(failed)
    summary = "%d challenge(s): %d ok, %d skipped, %d failed" % (len(results), ok, skipped,
                                                                 len(failed))
    if failed and all(r.reason in remote.TRANSIENT for r in failed) and not (
            probe.outcome.outcome == "failed" and probe.reason not in remote.TRANSIENT):
        print("verdict: UNREACHABLE (%s)" % summary)
        return USAGE
    if failed or probe.outcome.outcome == "failed":
        behind = any(r.reason in remote.BEHIND for r in results + [probe])
        print("verdict: FAILED (%s)%s" % (summary, "; it does not prove against epoch %d: if "
                                          "that epoch is minutes old, the owner's gateway has "
                                          "not told it yet" % epoch if behind else ""))
        return FAILED
    if not ok and probe.outcome.outcome != "ok":
        print("verdict: OK, nothing held (%s; every answer a release by the owner, so the "
              "count is not proven)" % summary)
        return OK
    print("verdict: OK (%s)" % summary)
    return OK

