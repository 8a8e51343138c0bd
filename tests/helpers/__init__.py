"""What several test modules share (test modules never import each other):

    paths.py    REPO, ENV (the repository on PYTHONPATH), cli() for `python -m ...`
    wait.py     wait_for(predicate)
    mqtt.py     paho clients: Subscriber, Client (with credentials), Peer, Gateway (plays one)
    device.py   the agent's side: Sensors, poll_until(client, condition)
    e2e.py      a gateway process, simulated trackers, and checks on what it stored
    camera.py   an owner keyring for a device, and an object's export through the CLI
    vectors.py  load(name): tests/vectors/<name>

Fixtures (broker, broker_options) are in tests/conftest.py."""
