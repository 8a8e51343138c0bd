"""Storage audits drawn from chain randomness, their answers and checks, repair; and the
verification of stored messages and proof files against the chain. Imports wire, store,
chain.
"""
