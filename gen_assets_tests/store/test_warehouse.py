import duckdb
import pyarrow as pa
import pytest

from gen_assets.store import registry
from gen_assets.store import warehouse as wh
from gen_assets.store.batches import batch_table, write_batch
from gen_assets.store.snapshots import write_snapshot


@pytest.fixture
def con(tmp_path):
    c = duckdb.connect(str(tmp_path / "w.duckdb"))
    wh.ensure_schema(c)
    yield c
    c.close()


def test_snapshot_is_named_by_content_and_immutable(tmp_path):
    t = pa.table({"row_id": ["1", "2"], "content_hash": ["a", "b"]})
    s1 = write_snapshot(t, tmp_path, hash_columns=["row_id", "content_hash"], source="x")
    s2 = write_snapshot(t, tmp_path, hash_columns=["row_id", "content_hash"], source="x")
    assert s1 == s2 and s1.rows == 2
    changed = pa.table({"row_id": ["1", "2"], "content_hash": ["a", "c"]})
    s3 = write_snapshot(changed, tmp_path, hash_columns=["row_id", "content_hash"], source="x")
    assert s3.version != s1.version
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({f"{s1.version}.parquet", f"{s3.version}.parquet"})


def test_generated_view_lists_every_batch_of_every_modality(tmp_path, con):
    registry.refresh_generated_view(con)
    assert con.execute("SELECT count(*) FROM generated").fetchone()[0] == 0
    images = batch_table(batch_id="b1", model_version="m1", modality="image", categories=["0", "1"],
                         contents=[b"\x89PNG1", b"\x89PNG2"], seed=3)
    texts = batch_table(batch_id="b2", model_version="m2", modality="text", categories=["comedy"],
                        contents=["Good morrow — “sweet” lady"], seed=4)
    for table, bid, modality in ((images, "b1", "image"), (texts, "b2", "text")):
        path = write_batch(table, tmp_path, bid)
        registry.register_batch(con, batch_id=bid, modality=modality, model_version=table["model_version"][0].as_py(),
                                path=str(path), grid_path=None, n_samples=table.num_rows)
    rows = con.execute("SELECT sample_id, modality, category, content, text FROM generated ORDER BY sample_id").fetchall()
    assert [r[0] for r in rows] == ["b1-00000", "b1-00001", "b2-00000"]
    assert rows[0][3] == b"\x89PNG1" and rows[0][4] is None
    assert rows[2][3] == "Good morrow — “sweet” lady".encode() and rows[2][4] == "Good morrow — “sweet” lady"


def test_ensure_schema_keeps_a_warehouse_of_the_first_release_readable(tmp_path):
    """The first release's models table (no feedback_version, details, key metric, pruned_at,
    registered_at) and no curated or feedback tables: ensure_schema adds what is missing, keeps the rows."""
    c = duckdb.connect(str(tmp_path / "old.duckdb"))
    c.execute(
        "CREATE TABLE models (model_version VARCHAR PRIMARY KEY, modality VARCHAR NOT NULL, arch VARCHAR NOT NULL, "
        "config JSON, input_versions JSON, checkpoint_path VARCHAR NOT NULL, checkpoint_sha VARCHAR NOT NULL, "
        "status VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL)"
    )
    c.execute("INSERT INTO models VALUES ('v1', 'image', 'dcgan', '{}', '{\"clean_images\": \"s1\"}', '/m/v1.pt', 'sha', "
              "'champion', TIMESTAMP '2024-01-01')")
    wh.ensure_schema(c)
    wh.ensure_schema(c)  # applying it again changes nothing
    model = registry.champion(c, "image")
    assert (model["model_version"], model["input_versions"], model["feedback_version"], model["pruned_at"]) == (
        "v1", {"clean_images": "s1"}, None, None)
    tables = {r[0] for r in c.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert {"quarantine", "models", "promotions", "metrics_history", "batches", "curated_samples", "feedback",
            "feedback_files", "feedback_versions"} <= tables
    c.close()
