"""An anchored audit's records checked with the chain alone (`edgekeep verify --audit N`).

Each record's hash is made again from its fields (keeper.challenges.record_hash, with the
seed block and seed hash StorageAudit read itself), and proven into the audit's root on
chain (StorageAudit.verifyRecord); the count of challenges and failures must be the
chain's. So a record, a failure included, cannot be altered, added or dropped after it was
anchored, whoever holds the store.
"""
from gateway.keeper.challenges import Challenge, Outcome, record_hash
from gateway.wire import merkle


def check_audit(chain, audit, records):
    """[(record index, problem or None)] and a list of problems with the audit as a whole;
    records: the store's Records of the audit (store.audits.records)."""
    on_chain = chain.audit_of(audit)
    if on_chain is None:
        return [], ["audit %d is not anchored on chain" % audit]
    problems = []
    failed = sum(r.outcome == "failed" for r in records)
    if (on_chain["challenges"], on_chain["failed"]) != (len(records), failed):
        problems.append("the chain records %d challenges, %d failed; the store has %d, %d"
                        % (on_chain["challenges"], on_chain["failed"], len(records), failed))
    hashes = [r.hash for r in records]
    if not hashes or merkle.root(hashes) != on_chain["root"]:
        problems.append("the records' root is not the audit's root on chain")
    out = []
    for r in records:
        made = record_hash(audit, on_chain["seed_block"], on_chain["seed_hash"],
                           Challenge(r.idx, r.epoch, r.leaf, 0),
                           Outcome(r.outcome, None, r.digest, r.chunk))
        if made != r.hash:
            out.append((r.idx, "its fields do not give its hash"))
        elif not chain.verify_audit_record(audit, r.hash, r.idx, len(hashes),
                                           merkle.inclusion_proof(hashes, r.idx)):
            out.append((r.idx, "not proven into the root on chain"))
        else:
            out.append((r.idx, None))
    return out, problems
