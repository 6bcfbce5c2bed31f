"""Flow results as JSON that any process can read back with ``state.result(fetch=True)``.

Prefect 2 writes a pydantic model result as ``{"__class__": "pkg.mod.Model", "data": {...}}`` but
decodes it with pydantic v1's ``parse_obj_as``, which fails for pydantic 2 models ("no validator
found", PrefectHQ/prefect#12224; fixed only in Prefect 3). A result file records the qualified
name of its decoder, so flows that use :data:`RESULT_SERIALIZER` are decoded by
:func:`decode_json_object` in whichever process reads them, with no setup on the reader's side:

    @flow(name="flights", persist_result=True, result_serializer=RESULT_SERIALIZER)

(:func:`pipelines.components.workflow.workflow` sets it on every flow of this library.)
"""

from __future__ import annotations

import inspect
import typing
from typing import Any

import pydantic
from prefect.serializers import JSONSerializer, prefect_json_object_decoder
from prefect.utilities.importtools import from_qualified_name

DECODER = "pipelines.components.results.decode_json_object"

RESULT_SERIALIZER = JSONSerializer(object_decoder=DECODER)
"""JSON, as ``result_serializer="json"``, but pydantic 2 results decode back into their model."""


def decode_json_object(obj: dict) -> Any:
    """``json.loads`` object hook: pydantic 2 models by ``model_validate``, the rest as Prefect does."""
    if "__class__" in obj and "data" in obj:
        target = from_qualified_name(obj["__class__"])
        if isinstance(target, type) and issubclass(target, pydantic.BaseModel):
            return target.model_validate(obj["data"])
    return prefect_json_object_decoder(obj)


def result_problem(flow) -> str | None:
    """Why a flow's result could not be read back by another process, or None when it can."""
    if flow.persist_result is not True:
        return "it does not persist its result (persist_result=True)"
    serializer = flow.result_serializer
    kind = serializer if isinstance(serializer, str) else getattr(serializer, "type", None)
    if kind != "json":
        return f"its result serializer is {kind!r}, not JSON"
    decoder = None if isinstance(serializer, str) else getattr(serializer, "object_decoder", None)
    if decoder == DECODER:
        return None
    try:
        returned = typing.get_type_hints(flow.fn).get("return")
    except Exception:
        returned = inspect.signature(flow.fn).return_annotation
    if isinstance(returned, type) and issubclass(returned, pydantic.BaseModel):
        return (
            f"it returns the pydantic model {returned.__name__}, which Prefect 2's default JSON decoder cannot "
            "read back (PrefectHQ/prefect#12224); use result_serializer=RESULT_SERIALIZER from "
            "pipelines.components.results"
        )
    return None
