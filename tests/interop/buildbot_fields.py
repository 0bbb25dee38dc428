"""Prints every EntityType of the installed Buildbot's data API as JSON, for
tests/buildbot_www.rs: {plural: {field: type}}, a type being "integer", "string",
"boolean", "datetime", "binary", "json", "properties", {"nullable": type},
{"list": type} or {"entity": {field: type}}."""
import importlib
import json
import pkgutil

import buildbot.data
from buildbot.data import base, types


def describe(t):
    if isinstance(t, types.NoneOk):
        return {"nullable": describe(t.nestedType)}
    if isinstance(t, types.List):
        return {"list": describe(t.of)}
    if isinstance(t, types.Entity):
        return {"entity": {k: describe(f) for k, f in t.fields.items()}}
    for cls, name in [
        (types.Integer, "integer"),
        (types.DateTime, "datetime"),
        (types.String, "string"),
        (types.Identifier, "string"),
        (types.Binary, "binary"),
        (types.Boolean, "boolean"),
        (types.JsonObject, "json"),
        (types.SourcedProperties, "properties"),
    ]:
        if isinstance(t, cls):
            return name
    raise SystemExit(f"unknown Buildbot type {type(t).__name__}")


out = {}
for m in pkgutil.iter_modules(buildbot.data.__path__):
    mod = importlib.import_module("buildbot.data." + m.name)
    for v in vars(mod).values():
        if (
            isinstance(v, type)
            and issubclass(v, base.ResourceType)
            and getattr(v, "plural", None)
            and isinstance(getattr(v, "entityType", None), types.Entity)
        ):
            out[v.plural] = describe(v.entityType)["entity"]
print(json.dumps(out, sort_keys=True))
