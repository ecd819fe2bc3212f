"""Canary releases: the assignment, the operations commands, and gc around them."""

import json

import numpy as np
import pytest

from core import keys
from core.canary import Canary
from export import gc
from export.canary import abort_canary, promote, read_canary, start_canary
from export.cli import app
from export.publish import publish_bundle
from export.synthetic import synthetic_bundle
from export.versions import PublishError, activate_version

USERS = [f"user-{k}" for k in range(4000)]


def share(canary: Canary) -> float:
    return float(np.mean([canary.takes(u) for u in USERS]))


def test_a_ten_percent_canary_takes_ten_percent_of_users():
    assert abs(share(Canary("v2", 10, "salt-a")) - 0.10) <= 0.02
    assert abs(share(Canary("v2", 50, "salt-b")) - 0.50) <= 0.02


def test_raising_the_percent_only_moves_users_towards_the_canary():
    taken = {p: {u for u in USERS if Canary("v2", p, "s").takes(u)} for p in (1, 10, 50, 100)}
    assert taken[1] <= taken[10] <= taken[50] <= taken[100] == set(USERS)


def test_assignment_is_a_pure_function_of_user_salt_and_percent():
    first, again = Canary("v2", 30, "s"), Canary("v2", 30, "s")
    assert [first.takes(u) for u in USERS] == [again.takes(u) for u in USERS]
    other_salt = Canary("v2", 30, "t")
    assert [first.takes(u) for u in USERS] != [other_salt.takes(u) for u in USERS]
    with pytest.raises(ValueError, match="percent"):
        Canary("v2", 0, "s")


@pytest.fixture
def three_versions(redis_client, ns):
    return [
        publish_bundle(redis_client, ns, synthetic_bundle(12, seed=s), progress=False).version
        for s in range(3)
    ]  # v3 active


def test_canary_keeps_its_salt_when_the_share_changes_then_promote_and_abort(
    redis_client, ns, three_versions
):
    v1, v2, v3 = three_versions
    pubsub = redis_client.pubsub()
    pubsub.subscribe(keys.events_channel(ns))
    pubsub.get_message(timeout=1)
    first = start_canary(redis_client, ns, v2, 10)
    assert keys.parse_event(pubsub.get_message(timeout=1)["data"]) == {
        "kind": "canary",
        "version": v2,
    }
    assert start_canary(redis_client, ns, v2, 50).salt == first.salt
    assert start_canary(redis_client, ns, v1, 5).salt != first.salt  # a new canary, a new draw
    assert promote(redis_client, ns) == v1
    assert redis_client.get(keys.active_key(ns)) == v1.encode()
    assert redis_client.get(keys.previous_key(ns)) == v3.encode()
    assert read_canary(redis_client, ns) is None
    start_canary(redis_client, ns, v2, 20)
    assert abort_canary(redis_client, ns) == v2 and read_canary(redis_client, ns) is None
    assert abort_canary(redis_client, ns) is None


def test_a_canary_needs_a_complete_version_other_than_the_active_one(
    redis_client, ns, three_versions
):
    with pytest.raises(PublishError, match="already the active"):
        start_canary(redis_client, ns, three_versions[-1], 10)
    with pytest.raises(PublishError, match="no manifest"):
        start_canary(redis_client, ns, "v404", 10)
    with pytest.raises(PublishError, match="no canary"):
        promote(redis_client, ns)


def test_activate_keeps_the_canary_unless_it_activates_the_canary_itself(
    redis_client, ns, three_versions
):
    v1, v2, _ = three_versions
    start_canary(redis_client, ns, v2, 10)
    activate_version(redis_client, ns, v1)  # a rollback of the active arm
    assert read_canary(redis_client, ns).version == v2
    activate_version(redis_client, ns, v2)  # the same as promote
    assert read_canary(redis_client, ns) is None


def test_gc_never_deletes_the_canary(redis_client, ns, three_versions):
    v1, v2, v3 = three_versions
    activate_version(redis_client, ns, v2)  # previous v3
    start_canary(redis_client, ns, v1, 10)
    assert gc.protected_versions(redis_client, ns) == {v1, v2, v3}
    assert gc.collect_garbage(redis_client, ns, keep=0) == {}
    assert redis_client.exists(keys.manifest_key(ns, v1))


def test_status_and_the_canary_commands_from_the_command_line(
    redis_server, ns, three_versions, capsys
):
    _, v2, v3 = three_versions

    def cli(*args):
        code = app([*args, "--redis-url", redis_server.url, "--namespace", ns])
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    assert cli("canary", v2, "--percent", "10") == (0, f"canary {v2} at 10%\n")
    assert json.loads(cli("status", "--json")[1]) | {"guards": None} == {
        "active": v3,
        "previous": "v2",
        "canary": v2,
        "percent": 10,
        "guards": None,
    }
    assert cli("promote") == (0, f"{v2} active (promoted)\n")
    assert cli("abort") == (0, "no canary was running\n")
    code, out = cli("canary", "v404", "--percent", "10")
    assert code == 1 and "v404" in out
