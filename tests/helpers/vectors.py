"""The shipped test vectors: load("messages.json") is tests/vectors/messages.json, parsed."""
import json
import os

DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "vectors")


def path(name):
    return os.path.join(DIR, name)


def load(name):
    with open(path(name)) as f:
        return json.load(f)
