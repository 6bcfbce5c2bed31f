"""What changed in a Delta table since a version, read from its commit history."""

import json

import pytest

from pipelines.components.registry import DatasetSpec
from pipelines.components.resources import STATE_KEY
from pipelines.components.sharing import ShareError, changes_since, resolve_mode


def _commit(version, operation, run_id=None, **extra):
    commit = {"version": version, "operation": operation, **extra}
    if run_id:
        commit[STATE_KEY] = json.dumps({"run_id": run_id, "watermark": None})
    return commit


def _write(version, run_id, mode="Append", predicate=None, rows=1):
    params = {"mode": mode, **({"predicate": predicate} if predicate else {})}
    return _commit(
        version, "WRITE", run_id, operationParameters=params, operationMetrics={"num_added_rows": rows}
    )


def _merge(version, run_id, deleted=0):
    return _commit(version, "MERGE", run_id, operationMetrics={"num_target_rows_deleted": deleted})


def test_appends_and_merges_name_their_runs():
    history = [_merge(3, "r3"), _write(2, "r2"), _commit(4, "OPTIMIZE"), _write(1, "r1")]
    changes = changes_since(history, 1, 4)
    assert changes.run_ids == {"r2", "r3"}
    assert not changes.removes_rows and not changes.rewritten and changes.unidentified is None


def test_deletes_and_partition_replaces_remove_rows():
    assert changes_since([_commit(2, "DELETE", operationMetrics={"num_deleted_rows": 3})], 1, 2).removes_rows
    assert not changes_since(
        [_commit(2, "DELETE", operationMetrics={"num_deleted_rows": 0})], 1, 2
    ).removes_rows
    replace = changes_since([_write(2, "r2", mode="Overwrite", predicate="day >= '2024-01-02'")], 1, 2)
    assert replace.run_ids == {"r2"} and replace.removes_rows and not replace.rewritten
    assert changes_since([_merge(2, "r2", deleted=1)], 1, 2).removes_rows


def test_a_full_overwrite_supersedes_earlier_runs():
    changes = changes_since([_write(2, "r2"), _write(3, "r3", mode="Overwrite"), _write(4, "r4")], 1, 4)
    assert changes.run_ids == {"r3", "r4"} and changes.rewritten and changes.removes_rows


@pytest.mark.parametrize(
    ("history", "reason"),
    [
        ([_commit(2, "UPDATE")], "version 2 is a UPDATE, which changes rows without a run id"),
        ([_commit(2, "RESTORE")], "version 2 is a RESTORE"),
        ([_write(2, None)], "version 2 (WRITE) carries no run id"),
        ([_merge(2, None)], "version 2 (MERGE) carries no run id"),
        ([_write(3, "r3")], "no longer has every commit between versions 1 and 3"),
    ],
)
def test_commits_whose_rows_cannot_be_told_apart(history, reason):
    assert reason in changes_since(history, 1, 3 if "every commit" in reason else 2).unidentified


def test_an_empty_write_without_run_id_changes_nothing():
    assert changes_since([_write(2, None, rows=0)], 1, 2) == changes_since([], 1, 1)


def test_mode_defaults_and_errors():
    keyed = DatasetSpec(name="orders", stage="cleaned", primary_key=("id",))
    keyless = DatasetSpec(name="daily", stage="aggregated")
    assert resolve_mode(keyed, None) == "merge" and resolve_mode(keyless, None) == "replace"
    assert resolve_mode(keyless, "append") == "append"
    with pytest.raises(ShareError, match="Did you mean 'replace'"):
        resolve_mode(keyed, "replac")
    with pytest.raises(ShareError, match="'daily' has no primary_key in the registry"):
        resolve_mode(keyless, "merge")
