"""Index (and optionally invoke) a shipped function app the way the Azure Functions Python worker does on 3.13+.

Run it with the deployment's interpreter (a venv holding only requirements.txt plus azure-functions-runtime),
isolated, from the app folder:

    cd <app> && <venv>/bin/python -I <this file> [--invoke NAME --json-input ARG=FILE ...] [--plan FILE]

On Python 3.13+ the host starts the proxy worker, which hands every gRPC message to azure-functions-runtime:
`worker_init_request` (load_binding_registry, then index_function_app and Registry.add_indexed_function for
each function), `functions_metadata_request`, `function_load_request` and `invocation_request`. This script
sends the same messages to the same handlers, with the app folder first on sys.path as on Linux App Service.
The proxy worker's protobuf classes (generated from FunctionRpc.proto) are not on PyPI on their own, so
`Protos` below stands in for them: the same message and field names, enum values and oneof groups.

`--plan FILE` invokes several functions in turn, in one worker process as the host does: a JSON list of
`{"function": NAME, "inputs": {ARG: DATA}, "metadata": {FIELD: DATA}}`, where DATA is the TypedData the host
sends: `{"json": TEXT}`, `{"string": TEXT}`, or `{"http": {"method", "url", "headers", "query", "params",
"body"}}`. `{id}` in a later step stands for the `id` of the last JSON answer of an HTTP function that had one.

stdout gets one JSON object. Exit codes: 0 the worker accepted the app (and the invocations, if asked);
1 the worker refused it (the JSON and stderr carry the worker's own message); 3 this harness failed.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import sys
import traceback
import types
import uuid
from datetime import timedelta
from typing import Any

# --------------------------------------------------------------------------------------------------
# A stand-in for the proxy worker's `protos` module (FunctionRpc.proto, package AzureFunctionsRpcMessages).
# --------------------------------------------------------------------------------------------------

_SCALARS: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "bytes": (bytes,),
    "bool": (bool,),
    "int": (int,),
    "double": (float, int),
    "enum": (int, str),  # protobuf takes an enum's number or its label
    "duration": (timedelta,),  # protobuf 5.x takes a timedelta for google.protobuf.Duration
    "any": (object,),  # fields of types this harness never builds itself (cookies, collections)
}


class _Message:
    """Keyword construction like a generated protobuf class: unknown fields and wrong scalar types are refused."""

    FIELDS: dict[str, tuple[str, Any]] = {}
    ONEOFS: dict[str, tuple[str, ...]] = {}

    def __init__(self, **fields: Any) -> None:
        self._set: set[str] = set()
        for name, value in fields.items():
            if name not in self.FIELDS:
                raise ValueError(f'Protocol message {type(self).__name__} has no "{name}" field.')
            if value is None:  # protobuf treats None as "not set"
                continue
            self._check(name, value)
            for group in self.ONEOFS.values():
                if name in group:
                    self._set.difference_update(group)
            object.__setattr__(self, name, value)
            self._set.add(name)

    def _check(self, name: str, value: Any) -> None:
        kind, of = self.FIELDS[name]
        if kind in _SCALARS:
            if not isinstance(value, _SCALARS[kind]) or (kind in ("int", "enum", "double") and isinstance(value, bool)):
                raise TypeError(f"{type(self).__name__}.{name}: {value!r} has type {type(value).__name__}, not {kind}")
        elif kind == "message":
            if not isinstance(value, of()):
                raise TypeError(f"{type(self).__name__}.{name}: expected {of().__name__}, got {type(value).__name__}")
        elif kind == "map":
            if not isinstance(value, dict):
                raise TypeError(f"{type(self).__name__}.{name}: expected a mapping, got {type(value).__name__}")
        elif kind == "repeated" and (isinstance(value, (str, bytes)) or not hasattr(value, "__iter__")):
            raise TypeError(f"{type(self).__name__}.{name}: expected a sequence, got {type(value).__name__}")

    def __getattr__(self, name: str) -> Any:
        fields = type(self).FIELDS
        if name.startswith("_") or name not in fields:
            raise AttributeError(name)
        kind, of = fields[name]
        default: Any
        if kind == "message":
            default = of()()
        elif kind == "map":
            default = {}
        elif kind == "repeated":
            default = []
        else:
            default = {"string": "", "bytes": b"", "bool": False, "double": 0.0}.get(kind, 0)
        object.__setattr__(self, name, default)
        return default

    def WhichOneof(self, group: str) -> str | None:  # noqa: N802 - protobuf's name
        if group not in self.ONEOFS:
            raise ValueError(f'Protocol message has no "{group}" field.')
        return next((name for name in self.ONEOFS[group] if name in self._set), None)

    def HasField(self, name: str) -> bool:  # noqa: N802 - protobuf's name
        return name in self._set

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in sorted(self._set))
        return f"{type(self).__name__}({shown})"


def _message(name: str, fields: dict[str, tuple[str, Any]], oneofs: dict | None = None, **enums: int) -> type:
    return type(name, (_Message,), {"FIELDS": fields, "ONEOFS": oneofs or {}, **enums})


def _msg(name: str) -> tuple[str, Any]:
    return ("message", lambda: getattr(Protos, name))


def _build_protos() -> types.SimpleNamespace:
    s, b, i, e = ("string", None), ("bool", None), ("int", None), ("enum", None)
    ns = types.SimpleNamespace()
    ns.RpcException = _message(
        "RpcException",
        {"source": s, "stack_trace": s, "message": s, "is_user_exception": b, "type": s},
    )
    ns.RpcLog = _message(
        "RpcLog",
        {
            "invocation_id": s,
            "category": s,
            "level": e,
            "message": s,
            "event_id": s,
            "exception": _msg("RpcException"),
            "properties": s,
            "log_category": e,
            "propertiesMap": ("map", None),
        },
        Trace=0,
        Debug=1,
        Information=2,
        Warning=3,
        Error=4,
        Critical=5,
    )
    setattr(ns.RpcLog, "None", 6)
    ns.StatusResult = _message(
        "StatusResult",
        {"status": e, "result": s, "exception": _msg("RpcException"), "logs": ("repeated", None)},
        Failure=0,
        Success=1,
        Cancelled=2,
    )
    ns.WorkerMetadata = _message(
        "WorkerMetadata",
        {
            "runtime_name": s,
            "runtime_version": s,
            "worker_version": s,
            "worker_bitness": s,
            "custom_properties": ("map", None),
        },
    )
    ns.WorkerInitRequest = _message(
        "WorkerInitRequest",
        {
            "host_version": s,
            "capabilities": ("map", None),
            "log_categories": ("map", None),
            "worker_directory": s,
            "function_app_directory": s,
        },
    )
    ns.WorkerInitResponse = _message(
        "WorkerInitResponse",
        {
            "worker_version": s,
            "capabilities": ("map", None),
            "result": _msg("StatusResult"),
            "worker_metadata": _msg("WorkerMetadata"),
        },
    )
    ns.BindingInfo = _message(
        "BindingInfo",
        {"type": s, "direction": e, "data_type": e, "properties": ("map", None)},
        out=1,
        inout=2,
        undefined=0,
        string=1,
        binary=2,
        stream=3,
    )
    setattr(ns.BindingInfo, "in", 0)
    ns.RpcRetryOptions = _message(
        "RpcRetryOptions",
        {
            "max_retry_count": i,
            "delay_interval": ("duration", None),
            "minimum_interval": ("duration", None),
            "maximum_interval": ("duration", None),
            "retry_strategy": e,
        },
        exponential_backoff=0,
        fixed_delay=1,
    )
    ns.RpcFunctionMetadata = _message(
        "RpcFunctionMetadata",
        {
            "name": s,
            "directory": s,
            "script_file": s,
            "entry_point": s,
            "bindings": ("map", None),
            "is_proxy": b,
            "status": _msg("StatusResult"),
            "language": s,
            "raw_bindings": ("repeated", None),
            "function_id": s,
            "managed_dependency_enabled": b,
            "retry_options": _msg("RpcRetryOptions"),
            "properties": ("map", None),
        },
    )
    ns.FunctionsMetadataRequest = _message("FunctionsMetadataRequest", {"function_app_directory": s})
    ns.FunctionMetadataResponse = _message(
        "FunctionMetadataResponse",
        {
            "function_metadata_results": ("repeated", None),
            "result": _msg("StatusResult"),
            "use_default_metadata_indexing": b,
        },
    )
    ns.FunctionLoadRequest = _message(
        "FunctionLoadRequest",
        {"function_id": s, "metadata": _msg("RpcFunctionMetadata"), "managed_dependency_enabled": b},
    )
    ns.FunctionLoadResponse = _message(
        "FunctionLoadResponse", {"function_id": s, "result": _msg("StatusResult"), "is_dependency_downloaded": b}
    )
    ns.RpcHttpCookie = _message(
        "RpcHttpCookie",
        {
            "name": s,
            "value": s,
            "domain": ("any", None),
            "path": ("any", None),
            "expires": ("any", None),
            "secure": ("any", None),
            "http_only": ("any", None),
            "same_site": e,
            "max_age": ("any", None),
        },
        Lax=1,
        Strict=2,
        ExplicitNone=3,
    )
    ns.RpcHttpCookie.SameSite = types.SimpleNamespace(Lax=1, Strict=2, ExplicitNone=3, **{"None": 0})
    ns.RpcHttp = _message(
        "RpcHttp",
        {
            "method": s,
            "url": s,
            "headers": ("map", None),
            "body": _msg("TypedData"),
            "params": ("map", None),
            "status_code": s,
            "query": ("map", None),
            "enable_content_negotiation": b,
            "rawBody": _msg("TypedData"),
            "identities": ("repeated", None),
            "cookies": ("repeated", None),
            "nullable_headers": ("map", None),
            "nullable_params": ("map", None),
            "nullable_query": ("map", None),
        },
    )
    typed = (
        "string",
        "json",
        "bytes",
        "stream",
        "http",
        "int",
        "double",
        "collection_bytes",
        "collection_string",
        "collection_double",
        "collection_sint64",
        "model_binding_data",
        "collection_model_binding_data",
    )
    ns.TypedData = _message(
        "TypedData",
        {
            "string": s,
            "json": s,
            "bytes": ("bytes", None),
            "stream": ("bytes", None),
            "http": _msg("RpcHttp"),
            "int": i,
            "double": ("double", None),
            "collection_bytes": ("any", None),
            "collection_string": ("any", None),
            "collection_double": ("any", None),
            "collection_sint64": ("any", None),
            "model_binding_data": ("any", None),
            "collection_model_binding_data": ("any", None),
        },
        {"data": typed},
    )
    ns.RpcSharedMemory = _message("RpcSharedMemory", {"name": s, "offset": i, "count": i, "type": e})
    ns.ParameterBinding = _message(
        "ParameterBinding",
        {"name": s, "data": _msg("TypedData"), "rpc_shared_memory": _msg("RpcSharedMemory")},
        {"rpc_data": ("data", "rpc_shared_memory")},
    )
    ns.RpcTraceContext = _message("RpcTraceContext", {"trace_parent": s, "trace_state": s, "attributes": ("map", None)})
    ns.RetryContext = _message(
        "RetryContext", {"retry_count": i, "max_retry_count": i, "exception": _msg("RpcException")}
    )
    ns.InvocationRequest = _message(
        "InvocationRequest",
        {
            "invocation_id": s,
            "function_id": s,
            "input_data": ("repeated", None),
            "trigger_metadata": ("map", None),
            "trace_context": _msg("RpcTraceContext"),
            "retry_context": _msg("RetryContext"),
        },
    )
    ns.InvocationResponse = _message(
        "InvocationResponse",
        {
            "invocation_id": s,
            "output_data": ("repeated", None),
            "return_value": _msg("TypedData"),
            "result": _msg("StatusResult"),
        },
    )
    content = ("worker_init_request", "functions_metadata_request", "function_load_request", "invocation_request")
    ns.StreamingMessage = _message(
        "StreamingMessage",
        {"request_id": s, **{name: _msg(_camel(name)) for name in content}},
        {"content": content},
    )
    return ns


def _camel(name: str) -> str:
    special = {"functions_metadata_request": "FunctionsMetadataRequest"}
    return special.get(name, "".join(part.title() for part in name.split("_")))


Protos = _build_protos()


@dataclasses.dataclass
class WorkerRequest:
    """What the proxy worker passes to the runtime's handlers (proxy_worker.dispatcher.WorkerRequest)."""

    name: str
    request: Any
    properties: dict[str, Any] | None = None


# --------------------------------------------------------------------------------------------------
# The worker's path
# --------------------------------------------------------------------------------------------------

DIRECTIONS = {0: "in", 1: "out", 2: "inout"}
STATUS = {0: "Failure", 1: "Success", 2: "Cancelled"}


class Refused(Exception):
    def __init__(self, stage: str, status: Any) -> None:
        self.stage = stage
        self.message = status.exception.message
        self.stack_trace = status.exception.stack_trace
        super().__init__(f"{stage}: {self.message}")


def _spy_on_indexing(calls: list[str]) -> None:
    """Record that the runtime's own indexing functions ran, in which order (pass-through wrappers)."""
    from azure_functions_runtime import functions, handle_event

    load_binding_registry = handle_event.load_binding_registry
    index_function_app = handle_event.index_function_app
    add_indexed_function = functions.Registry.add_indexed_function

    def spy_load_binding_registry(*args: Any, **kwargs: Any) -> Any:
        calls.append("load_binding_registry")
        return load_binding_registry(*args, **kwargs)

    def spy_index_function_app(function_path: str) -> Any:
        calls.append(f"index_function_app:{os.path.basename(function_path)}")
        return index_function_app(function_path)

    def spy_add_indexed_function(self: Any, function: Any, protos: Any) -> Any:
        calls.append(f"add_indexed_function:{function.get_function_name()}")
        return add_indexed_function(self, function=function, protos=protos)

    handle_event.load_binding_registry = spy_load_binding_registry
    handle_event.index_function_app = spy_index_function_app
    functions.Registry.add_indexed_function = spy_add_indexed_function


def _type_name(pytype: Any) -> str | None:
    if pytype is None:
        return None
    if isinstance(pytype, type):
        return f"{pytype.__module__}.{pytype.__qualname__}"
    return repr(pytype)


async def _index(app_dir: str, calls: list[str]) -> dict[str, Any]:
    import azure_functions_runtime as runtime
    from azure_functions_runtime import handle_event
    from azure_functions_runtime.bindings.meta import is_trigger_binding

    _spy_on_indexing(calls)
    runtime.start_threadpool_executor()  # the proxy worker does this before WorkerInitRequest

    init = Protos.StreamingMessage(
        request_id=str(uuid.uuid4()),
        worker_init_request=Protos.WorkerInitRequest(
            host_version="4.1040.300.0",
            capabilities={},
            worker_directory=os.path.dirname(runtime.__file__),
            function_app_directory=app_dir,
        ),
    )
    response = await runtime.worker_init_request(
        WorkerRequest("WorkerInitRequest", init, {"protos": Protos, "host": "127.0.0.1"})
    )
    if response.result.status != Protos.StatusResult.Success:
        raise Refused("worker_init_request", response.result)

    metadata_request = Protos.StreamingMessage(
        request_id=str(uuid.uuid4()),
        functions_metadata_request=Protos.FunctionsMetadataRequest(function_app_directory=app_dir),
    )
    metadata = await runtime.functions_metadata_request(WorkerRequest("WorkerMetadataRequest", metadata_request))
    if metadata.result.status != Protos.StatusResult.Success:
        raise Refused("functions_metadata_request", metadata.result)
    if metadata.use_default_metadata_indexing:
        raise RuntimeError("the runtime asked the host to index the app itself (function.json, programming model v1)")

    summary: dict[str, Any] = {}
    for function in metadata.function_metadata_results or []:
        load = Protos.StreamingMessage(
            request_id=str(uuid.uuid4()),
            function_load_request=Protos.FunctionLoadRequest(function_id=function.function_id, metadata=function),
        )
        loaded = await runtime.function_load_request(WorkerRequest("FunctionLoadRequest", load))
        if loaded.result.status != Protos.StatusResult.Success:
            raise Refused("function_load_request", loaded.result)

        info = handle_event._functions.get_function(function.function_id)
        bindings = {
            name: {"type": binding.type, "direction": DIRECTIONS[binding.direction]}
            for name, binding in function.bindings.items()
        }
        triggers = [
            {"name": name, "type": binding["type"]}
            for name, binding in bindings.items()
            if binding["direction"] == "in" and is_trigger_binding(binding["type"])
        ]
        summary[function.name] = {
            "function_id": function.function_id,
            "script_file": function.script_file,
            "entry_point": function.entry_point,
            "bindings": bindings,
            "raw_bindings": [json.loads(raw) for raw in function.raw_bindings],
            "triggers": triggers,
            "trigger": triggers[0]["type"] if len(triggers) == 1 else None,
            "has_return": info.has_return,
            "is_async": info.is_async,
            "input_types": {name: [t.binding_name, _type_name(t.pytype)] for name, t in info.input_types.items()},
            "output_types": {name: [t.binding_name, _type_name(t.pytype)] for name, t in info.output_types.items()},
            "return_type": None if info.return_type is None else info.return_type.binding_name,
        }
    return summary


async def _invoke(function_id: str, json_inputs: dict[str, str]) -> dict[str, Any]:
    import azure_functions_runtime as runtime

    invocation_id = str(uuid.uuid4())
    system_metadata = {"MethodName": "invoke", "UtcNow": "2026-11-26T18:00:00Z", "RandGuid": invocation_id}
    request = Protos.StreamingMessage(
        request_id=str(uuid.uuid4()),
        invocation_request=Protos.InvocationRequest(
            invocation_id=invocation_id,
            function_id=function_id,
            input_data=[
                Protos.ParameterBinding(name=name, data=Protos.TypedData(json=payload))
                for name, payload in json_inputs.items()
            ],
            # The host's system metadata, sent with every trigger.
            trigger_metadata={"sys": Protos.TypedData(json=json.dumps(system_metadata))},
            trace_context=Protos.RpcTraceContext(trace_parent="", trace_state="", attributes={}),
            retry_context=Protos.RetryContext(retry_count=0, max_retry_count=0),
        ),
    )
    response = await runtime.invocation_request(WorkerRequest("FunctionInvocationRequest", request))
    result = {
        "status": STATUS[response.result.status],
        "output_data": [binding.name for binding in response.output_data],
        "return_value": None if response.return_value is None else response.return_value.WhichOneof("data"),
    }
    if response.result.status != Protos.StatusResult.Success:
        raise Refused("invocation_request", response.result)
    return result


def _typed(data: dict[str, Any]) -> Any:
    """TypedData as the host builds it for a trigger or a metadata field."""
    (kind, value), *rest = data.items()
    if rest or kind not in ("json", "string", "http"):
        raise ValueError(f"one of json, string or http, not {sorted(data)}")
    if kind != "http":
        return Protos.TypedData(**{kind: value})
    return Protos.TypedData(
        http=Protos.RpcHttp(
            method=value["method"],
            url=value["url"],
            headers=dict(value.get("headers") or {}),
            body=Protos.TypedData(string=value.get("body") or ""),
            params=dict(value.get("params") or {}),
            query=dict(value.get("query") or {}),
        )
    )


async def _invoke_step(function_id: str, step: dict[str, Any]) -> dict[str, Any]:
    """One invocation of a plan; a failure is recorded, not raised, so that every step runs."""
    import azure_functions_runtime as runtime

    invocation_id = str(uuid.uuid4())
    system_metadata = {"MethodName": step["function"], "UtcNow": "2026-11-26T18:00:00Z", "RandGuid": invocation_id}
    metadata = {name: _typed(data) for name, data in (step.get("metadata") or {}).items()}
    request = Protos.StreamingMessage(
        request_id=str(uuid.uuid4()),
        invocation_request=Protos.InvocationRequest(
            invocation_id=invocation_id,
            function_id=function_id,
            input_data=[Protos.ParameterBinding(name=name, data=_typed(data)) for name, data in step["inputs"].items()],
            trigger_metadata={"sys": Protos.TypedData(json=json.dumps(system_metadata)), **metadata},
            trace_context=Protos.RpcTraceContext(trace_parent="", trace_state="", attributes={}),
            retry_context=Protos.RetryContext(retry_count=0, max_retry_count=0),
        ),
    )
    response = await runtime.invocation_request(WorkerRequest("FunctionInvocationRequest", request))
    result: dict[str, Any] = {
        "function": step["function"],
        "status": STATUS[response.result.status],
        "output_data": [binding.name for binding in response.output_data],
    }
    if response.result.status != Protos.StatusResult.Success:
        result["error"] = response.result.exception.message
    returned = response.return_value
    if returned is not None and returned.WhichOneof("data") == "http":
        body = returned.http.body
        kind = body.WhichOneof("data")
        text = getattr(body, kind) if kind else ""
        result["http_status"] = int(returned.http.status_code or 0)
        result["body"] = (text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text))[:4000]
    return result


async def _run_plan(functions: dict[str, Any], plan: list[dict[str, Any]]) -> list[dict[str, Any]]:
    results = []
    last_id = ""  # the promotion a later step acts on: the one the last promotion route answered
    for step in plan:
        if step["function"] not in functions:
            raise RuntimeError(f"no indexed function {step['function']!r}: {sorted(functions)}")
        step = json.loads(json.dumps(step).replace("{id}", last_id))
        result = await _invoke_step(functions[step["function"]]["function_id"], step)
        results.append(result)
        try:
            answered = json.loads(result.get("body") or "null")
        except ValueError:
            answered = None
        if isinstance(answered, dict) and isinstance(answered.get("id"), str) and "model_name" in answered:
            last_id = answered["id"]
    return results


async def _main(args: argparse.Namespace, out: dict[str, Any]) -> None:
    app_dir = os.path.abspath(os.getcwd())
    calls: list[str] = out.setdefault("calls", [])
    out["functions"] = await _index(app_dir, calls)
    if args.invoke:
        functions = out["functions"]
        if args.invoke not in functions:
            raise RuntimeError(f"no indexed function {args.invoke!r}: {sorted(functions)}")
        inputs = {}
        for spec in args.json_input:
            name, _, path = spec.partition("=")
            with open(path, encoding="utf-8") as file:
                inputs[name] = file.read()
        out["invocation"] = {"function": args.invoke}
        out["invocation"].update(await _invoke(functions[args.invoke]["function_id"], inputs))
    if args.plan:
        with open(args.plan, encoding="utf-8") as file:
            out["invocations"] = await _run_plan(out["functions"], json.load(file))
        failed = [step for step in out["invocations"] if step["status"] != "Success"]
        if failed:
            out.update(
                ok=False, stage="invocation_request", error="; ".join(f"{s['function']}: {s['error']}" for s in failed)
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoke", help="after indexing, invoke this function through the runtime")
    parser.add_argument(
        "--json-input",
        action="append",
        default=[],
        metavar="ARG=FILE",
        help="a binding's payload, sent as TypedData.json (e.g. an Event Grid event)",
    )
    parser.add_argument("--plan", metavar="FILE", help="invoke the functions a JSON plan lists, in turn")
    args = parser.parse_args()

    # The app folder is the working directory and first on sys.path, as on Linux App Service
    # (AzureWebJobsScriptRoot=/home/site/wwwroot). Run with -I so the harness's own folder is not on sys.path.
    app_dir = os.path.abspath(os.getcwd())
    os.environ.setdefault("AzureWebJobsScriptRoot", app_dir)
    if app_dir not in sys.path:
        sys.path.insert(0, app_dir)

    # The proxy worker sends the root logger's records (INFO and up) to the host's log; here they go to stderr.
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    stdout = sys.stdout
    sys.stdout = sys.stderr  # the app's prints go to the log, stdout carries only the JSON answer
    out: dict[str, Any] = {"python": sys.version.split()[0]}
    code = 0
    try:
        from importlib.metadata import version

        out["azure-functions"] = version("azure-functions")
        out["azure-functions-runtime"] = version("azure-functions-runtime")
        asyncio.run(_main(args, out))
        out.setdefault("ok", True)
        code = 0 if out["ok"] else 1
    except Refused as refused:
        out.update(ok=False, stage=refused.stage, error=refused.message, stack_trace=refused.stack_trace)
        print(
            f"the worker refused the app at {refused.stage}: {refused.message}\n{refused.stack_trace}", file=sys.stderr
        )
        code = 1
    except Exception as error:  # a failure of this harness, not a refusal by the worker
        out.update(ok=False, stage="harness", error=f"{type(error).__name__}: {error}")
        traceback.print_exc()
        code = 3
    finally:
        sys.stdout = stdout
    print(json.dumps(out, indent=1))
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
