import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import harness  # noqa: E402


@pytest.fixture
def deployment(request):
    """Topics, a database and groups of this test case only; removed at the end."""
    made = []

    def make(name):
        d = harness.Deployment(name)
        made.append(d)
        return d.setup()

    yield make
    for d in made:
        d.teardown()
