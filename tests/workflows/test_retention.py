"""PII expiry in raw and quarantine with an injected clock (the retention flow)."""

import csv
import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest

from pipelines.components.resources import Storage
from pipelines.lake import Lake
from pipelines.lake.retention import PSEUDONYM_KEY, RetentionKeyError
from pipelines.workflows.ingest import ingest
from pipelines.workflows.retention import retention

pytestmark = pytest.mark.usefixtures("prefect_harness")

KEY = "k" * 16 + "0123456789abcdef0123"
PEOPLE = """\
columns:
  person_id:  {type: int64, nullable: false}
  email:      {type: string}
  name:       {type: string}
  city:       {type: string}
  updated_at: {type: datetime, format: "%Y-%m-%d %H:%M:%S", nullable: false}
"""
FIELDS = ["name", "stage", "source", "format", "primary_key", "incremental_field", "ingestion_style",
          "pii_columns", "retention_days", "retention_action", "schema_policy", "quality_policy"]  # fmt: skip
FIRST = (
    "person_id,email,name,city,updated_at\n"
    "1,ada@example.org,Ada Lovelace,London,2026-01-01 10:00:00\n"
    '2,"alan@example.org","Turing, Alan",Wilmslow,2026-01-01 11:00:00\n'
    "3,bad@example.org,Bad Row,Nowhere,not a time\n"
)
SECOND = "person_id,email,name,city,updated_at\n1,ada@example.org,Ada L.,Paris,2026-01-02 10:00:00\n"
PII = (
    "ada@example.org",
    "alan@example.org",
    "bad@example.org",
    "Ada Lovelace",
    "Turing, Alan",
    "Bad Row",
    "Ada L.",
)


@pytest.fixture
def env(tmp_path, monkeypatch):
    def registry(**row):
        folder = tmp_path / "registry"
        (folder / "contracts").mkdir(parents=True, exist_ok=True)
        (folder / "contracts" / "people.yaml").write_text(PEOPLE)
        base = {
            "name": "people", "stage": "cleaned", "source": "people/*.csv", "format": "csv",
            "primary_key": "person_id", "incremental_field": "updated_at", "ingestion_style": "incremental",
            "pii_columns": "email|name", "retention_days": "30", "schema_policy": "evolve",
            "quality_policy": "quarantine",
        }  # fmt: skip
        with open(folder / "datasets.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, FIELDS)
            writer.writeheader()
            writer.writerow({k: {**base, **row}.get(k, "") for k in FIELDS})
        monkeypatch.setenv("PIPELINES_REGISTRY", str(folder / "datasets.csv"))

    registry()
    monkeypatch.setenv("PIPELINES_LANDING_URL", str(tmp_path / "landing"))
    monkeypatch.setenv(PSEUDONYM_KEY, KEY)
    landing = Storage(str(tmp_path / "landing"))
    for name, text in (("p1.csv", FIRST), ("p2.csv", SECOND)):
        landing.write_atomic(f"people/{name}", text.encode())
    ingest(dataset="people")
    env.registry = registry
    env.lake = Lake(Storage(str(tmp_path / "data" / "test")))
    env.raw = tmp_path / "data" / "test" / "raw" / "people"
    env.landing = landing
    env.today = datetime.now(UTC).date()
    return env


def _raw_bytes(env) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in env.raw.rglob("*.csv")}


def _hits(blobs, values=PII) -> list[str]:
    return [v for v in values for blob in blobs if v.encode() in blob]


def _pn(value: str) -> str:
    return "pn:" + hmac.new(KEY.encode(), value.encode(), hashlib.sha256).hexdigest()


def test_pii_older_than_retention_days_is_pseudonymised_and_reprocessing_still_works(env):
    cleaned_before = env.cleaned_before = env.lake.read("cleaned", "people").sort("person_id")
    quarantined = env.lake.read("quarantine", "people")
    assert quarantined.height == 1 and _hits([quarantined.write_csv().encode()])
    raw_before = _raw_bytes(env)

    # 30 days after landing the files are not older than retention_days yet: untouched.
    young = retention(as_of=env.today + timedelta(days=30))
    assert young.datasets[0].raw_expired == [] and _raw_bytes(env) == raw_before
    dry = retention(as_of=env.today + timedelta(days=31), dry_run=True)
    assert len(dry.datasets[0].raw_expired) == 2 and dry.datasets[0].quarantine_rows == 1
    assert _raw_bytes(env) == raw_before and env.lake.read("quarantine", "people").equals(quarantined)

    done = retention(as_of=env.today + timedelta(days=31))

    assert len(done.datasets[0].raw_expired) == 2 and done.datasets[0].quarantine_rows == 1
    after = _raw_bytes(env)
    assert sorted(after) == sorted(raw_before)  # same names: the content hash index and ledger still match
    assert _hits(after.values()) == []
    for city in (b"London", b"Wilmslow", b"Paris", b"2026-01-01 10:00:00"):
        assert any(city in blob for blob in after.values())
    assert all(_pn("ada@example.org").encode() in blob for blob in after.values())  # joins still match
    assert _hits([env.lake.read("quarantine", "people").write_csv().encode()]) == []
    assert _pn("bad@example.org") in env.lake.read("quarantine", "people").get_column("record")[0]

    again = retention(as_of=env.today + timedelta(days=40))
    assert (
        again.datasets[0].raw_already == 2
        and again.datasets[0].raw_expired == []
        and _raw_bytes(env) == after
    )

    # Landing still holds both files: nothing is landed or ingested again, even after a touch.
    env.landing.write_atomic("people/p1.csv", FIRST.encode())
    rerun = ingest(dataset="people")
    assert rerun.raw_files == [] and rerun.rows_in == 0
    assert len(_raw_bytes(env)) == 2

    rebuilt = ingest(dataset="people", full_refresh=True)
    assert rebuilt.rows_in == 4 and rebuilt.quarantined == 1
    cleaned = env.lake.read("cleaned", "people").sort("person_id")
    keep = ["person_id", "city", "updated_at"]
    assert cleaned.select(keep).equals(cleaned_before.select(keep))
    assert cleaned.get_column("email").to_list() == [_pn("ada@example.org"), _pn("alan@example.org")]
    assert _hits([cleaned.write_csv().encode()]) == []


def test_delete_empties_old_raw_files_and_drops_quarantine_rows(env):
    env.registry(retention_action="delete")
    done = retention(dataset="people", as_of=env.today + timedelta(days=31))
    assert len(done.datasets[0].raw_expired) == 2 and done.datasets[0].quarantine_rows == 1
    assert set(_raw_bytes(env).values()) == {b""}
    assert env.lake.read("quarantine", "people").height == 0
    assert ingest(dataset="people").raw_files == []  # the emptied files' content is still recognised


def test_null_empties_the_columns(env):
    env.registry(retention_action="null")
    retention(as_of=env.today + timedelta(days=31))
    blobs = _raw_bytes(env)
    assert _hits(blobs.values()) == [] and b"\n1,,,London,2026-01-01 10:00:00" in b"".join(blobs.values())
    record = env.lake.read("quarantine", "people").get_column("record")[0]
    assert '"email":null' in record and "Nowhere" in record


def test_a_missing_key_is_refused_with_the_fix(env, monkeypatch):
    monkeypatch.delenv(PSEUDONYM_KEY)
    with pytest.raises(RetentionKeyError) as caught:
        retention(as_of=env.today + timedelta(days=31))
    text = str(caught.value)
    assert "pseudonymises the PII columns of people and needs the key PIPELINES_PSEUDONYM_KEY" in text
    assert "secrets.token_hex(32)" in text and "environment variable" in text
    monkeypatch.setenv(PSEUDONYM_KEY, "short")
    with pytest.raises(RetentionKeyError, match="has 5 characters; retention needs at least 32"):
        retention(as_of=env.today + timedelta(days=31))
