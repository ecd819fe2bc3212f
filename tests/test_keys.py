import pytest
from redis.crc import key_slot

from core import keys
from core.slot_reads import slot_of


def test_key_builders_give_exact_strings():
    assert keys.active_key("din") == "din:active"
    assert keys.versions_key("din") == "din:versions"
    assert keys.manifest_key("din", "v3") == "din:v3:manifest"
    assert keys.onnx_key("din", "v3") == "din:v3:onnx"
    assert keys.row_key("din", "v3", "item", "242") == "din:v3:item:242"
    assert keys.row_keys("din", "v3", keys.field_table("cat"), ["Drama", "Sci-Fi"]) == [
        "din:v3:f:cat:Drama",
        "din:v3:f:cat:Sci-Fi",
    ]
    assert keys.history_key("din", "196") == "din:user:{196}:hist"
    assert keys.profile_key("din", "196") == "din:user:{196}:profile"
    assert keys.seen_key("din", "196") == "din:user:{196}:seen"
    assert keys.user_keys("din", "196") == (
        "din:user:{196}:hist",
        "din:user:{196}:seen",
        "din:user:{196}:profile",
    )
    assert keys.behaviours_key("din") == "din:behaviours"
    assert keys.behaviours_partition_key("din", "2.4") == "din:behaviours:{2.4}"
    assert keys.dead_letter_key("din") == "din:behaviours:dead"
    assert keys.version_pattern("din", "v3") == "din:v3:*"


def test_bucket_keys_are_crc32_of_the_id_mod_the_bucket_count():
    # CRC-32("7") mod 4 = 2, CRC-32("242") mod 4 = 3: published versions depend on these
    assert keys.row_keys("din", "v3", "item", ["7", "242"], 0, 4) == [
        "din:v3:item:b:2",
        "din:v3:item:b:3",
    ]
    assert keys.row_keys("din", "v3", "item", ["7", "242"], 6, 4) == [
        "din:v3:item:{r2.4}:b:2",  # bucket n in group n mod 6
        "din:v3:item:{r3}:b:3",
    ]


def test_row_groups_tag_each_row_with_one_of_g_tags_spread_over_the_slot_ranges():
    grouped = keys.row_keys("din", "v3", "item", [str(i) for i in range(200)], 6)
    tags = {key.split(":")[3] for key in grouped}
    assert tags == set(keys.row_group_tags(6))
    assert all(key.endswith(f":{i}") for i, key in enumerate(grouped))
    sixths = sorted(key_slot(tag.strip("{}").encode()) * 6 // 16384 for tag in tags)
    assert sixths == [0, 1, 2, 3, 4, 5]
    assert keys.row_key("din", "v3", "item", "7", 6) in keys.row_keys("din", "v3", "item", ["7"], 6)
    with pytest.raises(ValueError, match="at most 1024"):
        keys.spread_tag("r", 0, 1025)


def test_events_round_trip_and_garbage_is_unknown():
    event = keys.parse_event(keys.rows_updated_event("v2", "item", ["a b", "c"]))
    assert event == {"kind": "rows-updated", "version": "v2", "table": "item", "ids": ["a b", "c"]}
    assert keys.parse_event(keys.activated_event("v9")) == {"kind": "activated", "version": "v9"}
    assert keys.parse_event(b"not json")["kind"] == "unknown"
    assert keys.parse_event("[1, 2]")["kind"] == "unknown"


@pytest.mark.parametrize(
    ("user_id", "tag"),
    [("196", "196"), ("a}b", "a%7Db"), ("}", "%7D"), ("a%7Db", "a%257Db"), ("{x}", "{x%7D")],
)
def test_user_keys_tag_the_whole_id_so_they_share_one_slot(user_id, tag):
    history, seen, profile = keys.user_keys("din", user_id)
    assert history == f"din:user:{{{tag}}}:hist"
    assert key_slot(history.encode()) == key_slot(tag.encode())
    assert key_slot(history.encode()) == key_slot(seen.encode()) == key_slot(profile.encode())


def test_ids_that_differ_get_different_user_keys():
    ids = ["a}b", "a%7Db", "a%257Db", "a}", "a%", "a"]
    assert len({keys.history_key("din", i) for i in ids}) == len(ids)


@pytest.mark.parametrize(
    "name",
    [
        "plain",
        "din:v1:item:{r3}:42",
        "din:v1:item:{r3.1}:b:7",
        "x{}y{z}",
        "x{y",
        "x}y{z}",
        "{{a}}",
        "a{b}c{d}",
        "é{ü}",
        "din:user:{u%7D1}:h",
    ],
)
def test_slot_of_agrees_with_redis_on_every_key_shape(name):
    assert slot_of(name) == key_slot(name.encode())
