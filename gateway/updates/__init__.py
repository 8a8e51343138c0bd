"""Fleet updates over the air: signed bundles the admin page takes (bundles.py), rollouts in
stages with a halt on failures (plan.py), and the engine that runs them in the gateway under
the workers' lease (engine.py), sending each device its update with gateway/ingest/ota.py.
"""
