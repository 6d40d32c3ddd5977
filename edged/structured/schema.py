"""The JSON Schema subset edged can enforce while decoding: anything outside it is refused, never ignored.

A schema is checked three ways before any token is generated: it must be a valid JSON Schema (draft
2020-12 metaschema), use only the keywords below, and stay within size bounds, counted with every
`$ref` expanded so that a few definitions cannot multiply into a huge grammar. Recursive `$ref`s are
refused: a grammar for them has no bound on its output, and a cut answer can never validate.
"""

from __future__ import annotations

import json
from typing import Any

from edged.errors import BadRequest

# Keywords that constrain the output, each enforced by the grammar.
CONSTRAINTS = frozenset({
    "type", "properties", "required", "additionalProperties", "enum", "const", "items", "minItems",
    "maxItems", "minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "anyOf", "$ref", "$defs", "definitions",
})
# Keywords that only describe: they change nothing in the output, so they may stay in a schema.
ANNOTATIONS = frozenset({"title", "description", "default", "examples", "$schema", "$id", "$comment",
                         "deprecated", "readOnly", "writeOnly"})
TYPES = frozenset({"string", "number", "integer", "boolean", "null", "object", "array"})

MAX_SCHEMA_BYTES = 32_768
MAX_DEPTH = 10  # nested subschemas, counted through $refs
MAX_EXPANDED_NODES = 4_000  # subschemas with every $ref expanded
MAX_PROPERTIES = 64
MAX_ENUM = 128
MAX_ANY_OF = 16
MAX_LENGTH_BOUND = 4_096  # minLength, maxLength, minItems, maxItems
# Objects and arrays inside each other anywhere in a schema: MAX_DEPTH subschemas need about twice that;
# jsonschema's metaschema check recurses a dozen frames per level and hit Python's limit at ~200.
MAX_JSON_NESTING = 64


def _nesting(value: Any) -> int:
    """How deeply objects and arrays nest in `value` (iterative: the value may be deeper than the stack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_JSON_NESTING:
            break
        stack.extend((child, depth + 1) for child in children)
    return deepest


class _Walk:
    def __init__(self, root: dict[str, Any], field: str) -> None:
        self.root, self.field = root, field
        self.defs: dict[str, Any] = {}
        for key in ("$defs", "definitions"):
            for name, sub in (root.get(key) or {}).items():
                pointer = name.replace("~", "~0").replace("/", "~1")  # JSON Pointer escapes (RFC 6901)
                self.defs[f"#/{key}/{pointer}"] = sub
        self.expanded: dict[str, int] = {}
        self.active: list[str] = []

    def fail(self, where: str, message: str) -> BadRequest:
        return BadRequest(f"`{self.field}` at {where or '/'}: {message}")

    def node(self, schema: Any, where: str, depth: int) -> int:
        """Check one subschema and those under it; returns its size with $refs expanded."""
        if isinstance(schema, bool):
            return 1
        if not isinstance(schema, dict):
            raise self.fail(where, "a schema must be an object or a boolean")
        if depth > MAX_DEPTH:
            raise self.fail(where, f"nested deeper than {MAX_DEPTH} levels; flatten the schema")
        for key in schema:
            if key not in CONSTRAINTS and key not in ANNOTATIONS:
                raise self.fail(where, f"keyword `{key}` is not supported (edged enforces: "
                                       f"{', '.join(sorted(CONSTRAINTS))}; see docs/protocol.md)")
        if "$defs" in schema or "definitions" in schema:
            if where:
                raise self.fail(where, "`$defs` are allowed only at the top of the schema")
        self._bounds(schema, where)
        size = 1
        for name, sub in (schema.get("properties") or {}).items():
            size += self.node(sub, f"{where}/properties/{name}", depth + 1)
        for key in ("additionalProperties", "items"):
            if key in schema:
                size += self.node(schema[key], f"{where}/{key}", depth + 1)
        for index, sub in enumerate(schema.get("anyOf") or ()):
            size += self.node(sub, f"{where}/anyOf/{index}", depth + 1)
        if "$ref" in schema:
            size += self.ref(schema["$ref"], where, depth)
        if size > MAX_EXPANDED_NODES:
            raise self.fail(where, f"more than {MAX_EXPANDED_NODES} subschemas with every $ref expanded")
        return size

    def ref(self, target: str, where: str, depth: int) -> int:
        if target == "#":
            raise self.fail(where, "recursive `$ref` '#' (the whole schema): recursive schemas are not "
                                   "supported, unroll it to a fixed depth")
        if target not in self.defs:
            raise self.fail(where, f"`$ref` {target!r} is not one of this schema's `$defs` (only local "
                                   "references like \"#/$defs/name\" are supported)")
        if target in self.active:
            raise self.fail(where, f"recursive `$ref` {target!r}: recursive schemas are not supported, "
                                   "unroll it to a fixed depth")
        known = self.expanded.get(f"{depth} {target}")
        if known is not None:
            return known
        self.active.append(target)
        try:
            size = self.expanded[f"{depth} {target}"] = self.node(self.defs[target], target[1:], depth)
            return size
        finally:
            self.active.pop()

    def _bounds(self, schema: dict[str, Any], where: str) -> None:
        types = schema.get("type", [])
        for name in [types] if isinstance(types, str) else types:
            if name not in TYPES:
                raise self.fail(where, f"unknown type {name!r}")
        if len(schema.get("properties") or {}) > MAX_PROPERTIES:
            raise self.fail(where, f"more than {MAX_PROPERTIES} properties")
        if len(schema.get("enum") or ()) > MAX_ENUM:
            raise self.fail(where, f"`enum` has more than {MAX_ENUM} values")
        if len(schema.get("anyOf") or ()) > MAX_ANY_OF:
            raise self.fail(where, f"`anyOf` has more than {MAX_ANY_OF} branches")
        for key in ("minLength", "maxLength", "minItems", "maxItems"):
            if key in schema and schema[key] > MAX_LENGTH_BOUND:
                raise self.fail(where, f"`{key}` above {MAX_LENGTH_BOUND}")
        for low, high in (("minLength", "maxLength"), ("minItems", "maxItems"), ("minimum", "maximum")):
            if low in schema and high in schema and schema[low] > schema[high]:
                raise self.fail(where, f"`{low}` is above `{high}`: no value can match")


def check_schema(schema: Any, field: str) -> None:
    """Raise BadRequest naming `field` and the keyword unless edged can enforce `schema` exactly."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    if not isinstance(schema, dict):
        raise BadRequest(f"`{field}` must be a JSON Schema object")
    if _nesting(schema) > MAX_JSON_NESTING:
        raise BadRequest(f"`{field}` nests objects and arrays more than {MAX_JSON_NESTING} deep; flatten the schema "
                         f"(at most {MAX_DEPTH} levels of subschemas)")
    size = len(json.dumps(schema, separators=(",", ":")))
    if size > MAX_SCHEMA_BYTES:
        raise BadRequest(f"`{field}` is {size} bytes of JSON; at most {MAX_SCHEMA_BYTES} are accepted")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        at = "/" + "/".join(str(p) for p in exc.path)
        raise BadRequest(f"`{field}` at {at} is not a valid JSON Schema: {exc.message[:200]}") from None
    walk = _Walk(schema, field)
    walk.node(schema, "", 0)
    for target in list(walk.defs):  # unused definitions are checked too: they are still schema
        walk.ref(target, target[1:], 0)
