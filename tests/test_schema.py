import json

import pytest
import yaml

from core.manifest import Manifest
from core.schema import FeatureSchema, SchemaError, load_schema_file, parse_schema_file

GOOD = {
    "data": {
        "log": "events.parquet",
        "columns": {"user": "user_id", "item": "item_id", "time": "ts", "label": "clicked"},
        "items": "items.parquet",
    },
    "features": {
        "item": [{"name": "item_id", "dim": 18}, {"name": "cat", "dim": 18}],
        "user": [{"name": "age", "dim": 4}, {"name": "user_id", "dim": 8}],
        "context": [{"name": "hour", "dim": 4}],
    },
    "history": {"max_length": 30, "behaviours": "positive"},
    "split": {"test_fraction": 0.25, "seed": 3},
}


def with_change(path: str, value):
    """GOOD with the value at a dotted path replaced (None deletes the key)."""
    raw = json.loads(json.dumps(GOOD))
    *parents, last = path.split(".")
    node = raw
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    if value is None:
        del node[last]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return raw


def test_a_schema_file_gives_dims_offsets_tables_and_paths_beside_it(tmp_path):
    path = tmp_path / "schema.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    parsed = load_schema_file(path)
    schema = parsed.features
    assert (schema.item_dim, schema.user_dim, schema.context_dim) == (36, 12, 4)
    assert schema.offsets("item") == {"item_id": slice(0, 18), "cat": slice(18, 36)}
    assert [f.name for f in schema.field_tables] == ["cat", "age", "user_id", "hour"]
    assert schema.user_id_field == "user_id" and [f.name for f in schema.profile_fields] == ["age"]
    assert parsed.data.log == tmp_path / "events.parquet" and parsed.data.users is None
    assert (schema.max_history, schema.behaviours) == (30, "positive")
    assert (parsed.split.test_fraction, parsed.split.seed) == (0.25, 3)


def test_the_schema_round_trips_through_a_manifest():
    schema = parse_schema_file(GOOD, "s.yaml").features
    assert FeatureSchema.from_dict(json.loads(json.dumps(schema.to_dict()))) == schema


@pytest.mark.parametrize(
    ("path", "value", "key"),
    [
        ("features.item.1.name", "item_id", "features.item[1].name"),
        ("features.context.0", {"name": "cat", "dim": 4}, "features"),
        ("features.item.1.dim", 0, "features.item[1].dim"),
        ("features.item.1.dim", -3, "features.item[1].dim"),
        ("features.item.1.dim", "18", "features.item[1].dim"),
        ("features.item.1", {"name": "cat", "dim": 4, "size": 9}, "features.item[1].size"),
        ("features.colour", [], "features.colour"),
        ("data.columns.clicks", "c", "data.columns.clicks"),
        ("data.columns.label", None, "data.columns.label"),
        ("data.format", "csv", "data.format"),
        ("history.behaviours", "clicked", "history.behaviours"),
        ("history.max_length", 0, "history.max_length"),
        ("split.test_fraction", 1.5, "split.test_fraction"),
        ("features.item.0.name", "ad_id", "features.item[0].name"),
        ("features.item", [], "features.item"),
        ("features.user.0.name", "bad name", "features.user[0].name"),
        ("extra", 1, "extra"),
    ],
)
def test_a_bad_schema_is_refused_naming_the_file_and_key(path, value, key):
    with pytest.raises(SchemaError) as caught:
        parse_schema_file(with_change(path, value), "my-schema.yaml")
    assert caught.value.key == key
    assert str(caught.value).startswith(f"my-schema.yaml: {key}: ")


def test_an_unreadable_file_is_a_schema_error(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("features: [unclosed")
    with pytest.raises(SchemaError, match=r"broken\.yaml"):
        load_schema_file(path)


def test_a_first_round_manifest_is_refused_with_the_reason():
    old = json.dumps({"format": 1, "version": "v1", "tables": {}})
    with pytest.raises(ValueError, match="predates feature schemas"):
        Manifest.from_json(old)


def test_an_older_service_reads_a_manifest_with_fields_it_does_not_know(bundle):
    from export.publish import make_manifest

    raw = json.loads(make_manifest(bundle, "v9", "float32").to_json())
    raw["tables"]["item"]["layout"] = "blocks"  # nested fields a newer exporter might add
    raw["schema"]["features"]["item"][1]["hashed"] = True
    raw["schema"]["history"]["decay"] = 0.5
    raw["canary"] = {"percent": 10}
    manifest = Manifest.from_json(json.dumps(raw))
    assert manifest.schema == bundle.schema and manifest.tables["item"].rows > 0


def test_a_manifest_of_an_unknown_format_is_refused_with_that_reason(bundle):
    from export.publish import make_manifest

    raw = json.loads(make_manifest(bundle, "v9", "float32").to_json()) | {"format": 4}
    with pytest.raises(ValueError, match="unsupported manifest format 4"):
        Manifest.from_json(json.dumps(raw))
