import csv

import pytest

from pipelines.components.registry import RegistryError, check_registry, load_registry, parse_duration
from tests.workflows.test_ingest import ORDERS, _orders_row, _registry


def test_the_shipped_registry_loads_with_typed_specs():
    from pipelines.components.environment import DEFAULT_REGISTRY

    registry = load_registry(DEFAULT_REGISTRY)
    flights = registry.get("flights")
    assert flights.primary_key == ("carrier", "flight", "time_hour")
    assert flights.contract.columns["time_hour"].timezone == "UTC"
    assert flights.lookback.days == 3


def test_placeholder_decimal_type_is_rejected(tmp_path):
    path = _registry(
        tmp_path, [_orders_row()], {"orders": ORDERS.replace('"decimal(12,2)"', '"decimal(p,s)"')}
    )
    with pytest.raises(RegistryError, match="unknown type"):
        load_registry(path)


def test_single_string_true_values_is_one_value(tmp_path):
    contract = ORDERS + '  paid: {type: bool, true_values: "yes", false_values: ["no"]}\n'
    spec = load_registry(_registry(tmp_path, [_orders_row()], {"orders": contract})).get("orders")
    assert spec.contract.columns["paid"].true_values == ("yes",)


def test_durations():
    assert parse_duration("3d").days == 3 and parse_duration("0") is None
    with pytest.raises(ValueError, match=r"e\.g\. 3d"):
        parse_duration("3 days")


def test_a_bad_registry_never_half_runs(tmp_path):
    path = _registry(
        tmp_path,
        [_orders_row(), _orders_row(name="orders"), _orders_row(name="x", lookback="soon")],
        {"orders": ORDERS},
    )
    with pytest.raises(RegistryError) as info:
        load_registry(path)
    message = str(info.value)
    assert "3 problem(s); nothing was run" in message
    assert (
        "is declared twice" in message
        and "has no contract" in message
        and "'soon' is not a duration" in message
    )


def test_a_source_url_ingest_cannot_read_is_refused_with_the_fix(tmp_path):
    rows = [
        _orders_row(name="relative", source="file://drop/*.csv"),
        _orders_row(name="ftp", source="ftp://host/x.csv"),
        _orders_row(name="absolute", source="file:///srv/drop/*.csv"),
    ]
    path = _registry(tmp_path, rows, {"relative": ORDERS, "ftp": ORDERS, "absolute": ORDERS})
    with pytest.raises(RegistryError) as caught:
        load_registry(path)
    text = str(caught.value)
    assert "file:// URL without an absolute path: write file:///absolute/path/*.csv" in text
    assert "uses ftp://, which ingest cannot read" in text
    assert "/srv/drop" not in text  # the file:/// row is fine


def test_quarantine_threshold_is_a_share_or_a_percentage(tmp_path):
    folder = tmp_path / "registry"
    (folder / "contracts").mkdir(parents=True)
    (folder / "contracts" / "orders.yaml").write_text(ORDERS)
    rows = ["orders,5%", "orders2,0.25", "orders3,150%", "orders4,lots"]
    for name in ("orders2", "orders3", "orders4"):
        (folder / "contracts" / f"{name}.yaml").write_text(ORDERS)
    (folder / "datasets.csv").write_text(
        "name,stage,source,format,primary_key,quarantine_threshold\n"
        + "".join(f"{r.split(',')[0]},cleaned,o/*.csv,csv,order_id,{r.split(',')[1]}\n" for r in rows)
    )
    with pytest.raises(RegistryError) as info:
        load_registry(folder / "datasets.csv")
    message = str(info.value)
    assert "2 problem(s)" in message
    assert (
        "datasets.csv row 4, quarantine_threshold = '150%': must be a share of a run's rows from 0 to 1"
        in message
    )
    assert "datasets.csv row 5, quarantine_threshold = 'lots'" in message
    (folder / "datasets.csv").write_text(
        "\n".join((folder / "datasets.csv").read_text().splitlines()[:3]) + "\n"
    )
    registry = load_registry(folder / "datasets.csv")
    assert (registry.get("orders").quarantine_threshold, registry.get("orders2").quarantine_threshold) == (
        0.05,
        0.25,
    )


def _retention_registry(root, rows, contract):
    path = _registry(root, [], {r["name"]: contract for r in rows})
    fields = [*_orders_row(), "pii_columns", "retention_days", "retention_action"]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fields)
        writer.writeheader()
        writer.writerows({k: r.get(k, "") for k in fields} for r in rows)
    return path


def test_retention_settings_are_checked_together(tmp_path):
    contract = ORDERS + "  email: {type: string}\n  owner_id: {type: int64, nullable: false}\n"
    rows = [
        _orders_row(name="ok", pii_columns="email", retention_days="30"),
        _orders_row(name="typo", pii_columns="email", retention_days="30", retention_action="pseudonymize"),
        _orders_row(name="no_days", pii_columns="email", retention_action="null"),
        _orders_row(name="no_pii", retention_days="30"),
        _orders_row(name="zero", pii_columns="email", retention_days="0"),
        _orders_row(name="typed", pii_columns="owner_id", retention_days="7"),
        _orders_row(name="required", pii_columns="owner_id", retention_days="7", retention_action="null"),
        _orders_row(name="whole_files", retention_days="7", retention_action="delete"),
    ]
    path = _retention_registry(tmp_path, rows, contract)
    with pytest.raises(RegistryError) as caught:
        load_registry(path)
    text = str(caught.value)
    assert "6 problem(s)" in text
    assert (
        "retention_action = 'pseudonymize': must be one of pseudonymise, null, delete. Did you mean 'pseudonymise'?"
        in text
    )
    assert "row 4, retention_action = 'null': says what happens after retention_days, which is empty" in text
    assert (
        "row 5, retention_days = '30': expires the pii_columns (pseudonymise), and this dataset declares none"
        in text
    )
    assert "row 6, retention_days = '0': must be a whole number of days, at least 1." in text
    assert "replaces owner_id with a keyed hash (text), but the contract types it int64" in text
    assert "empties owner_id, which the contract declares nullable: false" in text
    good = _retention_registry(tmp_path, [rows[0], rows[-1]], contract)
    registry = load_registry(good)
    assert (registry.get("ok").retention_days, registry.get("ok").retention_action) == (30, "pseudonymise")
    assert registry.get("whole_files").retention_action == "delete"


def test_a_registry_is_parsed_once_and_again_after_any_edit(tmp_path):
    path = _registry(tmp_path, [_orders_row()], {"orders": ORDERS})
    first = load_registry(path)
    assert load_registry(path) is first  # unchanged files: the parsed registry is reused
    # an edited contract, even one of the same size, is read again
    contract = path.parent / "contracts" / "orders.yaml"
    contract.write_text(
        contract.read_text().replace("order_id", "order_ix", 1).replace("order_ix", "order_id")
    )
    assert load_registry(path) is first
    contract.write_text(ORDERS + '  paid: {type: bool, true_values: "yes", false_values: ["no"]}\n')
    edited = load_registry(path)
    assert edited is not first and "paid" in edited.get("orders").contract.columns
    # an edit that breaks it raises every time, never the last good registry
    contract.write_text(ORDERS.replace('"decimal(12,2)"', '"decimal(p,s)"'))
    for _ in range(2):
        with pytest.raises(RegistryError, match="unknown type"):
            load_registry(path)
    # a new row in the CSV is seen too
    _registry(tmp_path, [_orders_row(), _orders_row(name="orders_copy")], {"orders_copy": ORDERS})
    contract.write_text(ORDERS)
    assert set(load_registry(path).datasets) == {"orders", "orders_copy"}


def test_expectations_are_checked_against_gx_when_first_used_and_their_shape_at_load(tmp_path):
    typo = ORDERS + "expectations:\n  - expect_column_values_to_not_be_nul: {column: order_id}\n"
    path = _registry(tmp_path, [_orders_row()], {"orders": typo})
    contract = load_registry(path).get("orders").contract  # a run's registry: GX not consulted yet
    message = (
        "contracts/orders.yaml, expectations[0].expect_column_values_to_not_be_nul: is not a Great "
        "Expectations expectation. Did you mean 'expect_column_values_to_not_be_null'?"
    )
    with pytest.raises(RegistryError) as raised:
        contract.check_expectations()
    assert str(raised.value).startswith(
        "The expectations of contracts/orders.yaml have 1 problem(s); nothing was validated or committed"
    )
    assert message in str(raised.value) and "`pipelines registry check`" in str(raised.value)
    with pytest.raises(RegistryError, match="not_be_nul"):
        _ = contract.expectations
    _, problems = check_registry(path)  # what `pipelines registry check` and a deploy run
    assert [str(p) for p in problems] == [message]

    fixed = _registry(tmp_path, [_orders_row()], {"orders": typo.replace("_nul:", "_null:")})
    [expectation] = load_registry(fixed).get("orders").contract.expectations
    assert (expectation.name, expectation.level, expectation.columns) == (
        "expect_column_values_to_not_be_null",
        "row",
        ("order_id",),
    )

    shape = ORDERS + "expectations:\n  - expect_column_values_to_not_be_null\n"  # no arguments mapping
    with pytest.raises(RegistryError, match=r"expectations\[0\] = 'expect_column_values_to_not_be_null'"):
        load_registry(_registry(tmp_path, [_orders_row()], {"orders": shape}))


def test_loading_the_registry_does_not_import_great_expectations(tmp_path):
    import subprocess
    import sys

    from pipelines.components.environment import DEFAULT_REGISTRY

    code = (
        "import sys\nfrom pipelines.components.registry import load_registry\n"
        f"registry = load_registry({str(DEFAULT_REGISTRY)!r})\n"
        "assert registry.get('flights').contract.expectation_entries\n"
        "print('great_expectations' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
