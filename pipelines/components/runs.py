"""Run ids that name what a workflow writes (rows' _run_id, raw file names, ledger rows)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime


def new_run_id() -> str:
    """``<UTC timestamp>_<8 chars>``: the Prefect flow run id when inside one, else random; sorts by time."""
    from prefect.runtime import flow_run

    run = flow_run.get_id()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return f"{stamp}_{(run or uuid.uuid4().hex)[:8]}"
