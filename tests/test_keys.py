from core import keys


def test_key_builders_give_exact_strings():
    assert keys.active_key("din") == "din:active"
    assert keys.versions_key("din") == "din:versions"
    assert keys.manifest_key("din", "v3") == "din:v3:manifest"
    assert keys.onnx_key("din", "v3") == "din:v3:onnx"
    assert keys.row_key("din", "v3", "item", "242") == "din:v3:item:242"
    assert keys.row_keys("din", "v3", "cat", ["Drama", "Sci-Fi"]) == [
        "din:v3:cat:Drama",
        "din:v3:cat:Sci-Fi",
    ]
    assert keys.history_key("din", "196") == "din:user:196:hist"
    assert keys.version_pattern("din", "v3") == "din:v3:*"


def test_events_round_trip_and_garbage_is_unknown():
    event = keys.parse_event(keys.rows_updated_event("v2", "item", ["a b", "c"]))
    assert event == {"kind": "rows-updated", "version": "v2", "table": "item", "ids": ["a b", "c"]}
    assert keys.parse_event(keys.activated_event("v9")) == {"kind": "activated", "version": "v9"}
    assert keys.parse_event(b"not json")["kind"] == "unknown"
    assert keys.parse_event("[1, 2]")["kind"] == "unknown"
