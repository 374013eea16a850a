#!/usr/bin/env python3
"""Checks the operator's manifests with tools that know Kubernetes.

Run by `operator/tests/manifests.rs` (with SLUICE_TEST_PYTHON, a Python that
has kubernetes-validate, jsonschema and cel-python):

    check_manifests.py --crd crds/ingester.yaml --examples operator/examples \
        --built DIR [--kube-version 1.33 ...]

1. Every document in DIR/*.yaml (the objects the builders made from every
   sample, and the CRD) passes `kubernetes-validate --strict` for each
   Kubernetes version given, plus the newest version the package knows.
2. Every sample `Ingester` in --examples, defaulted as the API server would,
   is valid against the CRD's OpenAPI schema (with unknown fields rejected,
   as `kubectl apply --validate=strict` does) and passes every
   `x-kubernetes-validations` CEL rule, evaluated with cel-python, both as
   a create and as a no-op update (so transition rules run too).
3. Every sample in --examples/invalid is rejected, and for the reason its
   first line names: `# expect: schema <text>` (a schema error containing
   <text>) or `# expect: cel <text>` (schema-valid, but a CEL rule whose
   message contains <text> is false). A file with two documents is an
   update: the first is the stored object (`oldSelf`), the second the new.

A broken CEL rule therefore fails: it either rejects a good sample or lets a
bad one through. Exit status 0 only if everything holds.
"""

import argparse
import copy
import glob
import os
import sys

import celpy
import jsonschema
import kubernetes_validate
import kubernetes_validate.utils as kv_utils
import yaml


def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def crd_schema(crd_path):
    (crd,) = load_docs(crd_path)
    (version,) = crd["spec"]["versions"]
    schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
    # The API server adds these to every custom resource's schema.
    props = schema.setdefault("properties", {})
    props.setdefault("apiVersion", {"type": "string", "enum": [f"{crd['spec']['group']}/{version['name']}"]})
    props.setdefault("kind", {"type": "string", "enum": [crd["spec"]["names"]["kind"]]})
    props.setdefault("metadata", {"type": "object", "x-kubernetes-preserve-unknown-fields": True})
    return schema


def to_json_schema(node):
    """OpenAPI v3 (Kubernetes flavour) -> JSON Schema.

    `nullable` becomes a null type; objects with declared properties reject
    unknown fields (strict field validation) unless they preserve them.
    """
    if isinstance(node, list):
        return [to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: to_json_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    out.pop("nullable", None)
    if (
        out.get("type") in ("object", ["object", "null"])
        and "properties" in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
        and "additionalProperties" not in node
    ):
        out["additionalProperties"] = False
    if node.get("x-kubernetes-int-or-string"):
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return out


def apply_defaults(schema, value):
    """Fills in `default`s the way the API server does before validating."""
    if not isinstance(value, dict) or schema.get("type") != "object":
        if isinstance(value, list) and "items" in schema:
            return [apply_defaults(schema["items"], v) for v in value]
        return value
    out = dict(value)
    for name, sub in schema.get("properties", {}).items():
        if name not in out and "default" in sub:
            out[name] = copy.deepcopy(sub["default"])
        if name in out:
            out[name] = apply_defaults(sub, out[name])
    return out


CEL_ENV = celpy.Environment()


def cel_failures(schema, value, old, path="$"):
    """(path, rule, message) for every false or failing CEL rule."""
    out = []
    for rule in schema.get("x-kubernetes-validations", []):
        expr = rule["rule"]
        is_transition = "oldSelf" in expr
        if is_transition and old is None:
            continue
        activation = {"self": celpy.json_to_cel(value)}
        if is_transition:
            activation["oldSelf"] = celpy.json_to_cel(old)
        try:
            result = CEL_ENV.program(CEL_ENV.compile(expr)).evaluate(activation)
        except Exception as e:  # a rule that does not compile or evaluate
            out.append((path, expr, f"evaluation error: {e}"))
            continue
        if isinstance(result, Exception) or not isinstance(result, celpy.celtypes.BoolType):
            out.append((path, expr, f"evaluation error: {result}"))
        elif not bool(result):
            out.append((path, expr, rule.get("message", expr)))
    if isinstance(value, dict):
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                sub_old = old.get(name) if isinstance(old, dict) else None
                out += cel_failures(sub, value[name], sub_old, f"{path}.{name}")
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            out += cel_failures(schema["items"], item, None, f"{path}[{i}]")
    return out


def check_ingester(schema, json_schema, docs):
    """(schema errors, CEL failures) of a sample (one doc, or old + new)."""
    new = apply_defaults(schema, docs[-1])
    old = apply_defaults(schema, docs[0]) if len(docs) > 1 else None
    validator = jsonschema.Draft7Validator(json_schema)
    schema_errors = [
        f"{'.'.join(str(p) for p in e.absolute_path) or '$'}: {e.message}"
        for e in validator.iter_errors(new)
    ]
    if old is not None:
        schema_errors += [f"(old) {e.message}" for e in validator.iter_errors(old)]
    return schema_errors, cel_failures(schema, new, old)


def expectation(path):
    with open(path) as f:
        first = f.readline().strip()
    prefix = "# expect: "
    if not first.startswith(prefix):
        return None
    kind, _, text = first[len(prefix):].partition(" ")
    return kind, text


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--crd", required=True)
    ap.add_argument("--examples", required=True)
    ap.add_argument("--built", required=True)
    ap.add_argument("--kube-version", action="append", default=[])
    args = ap.parse_args()

    failures = []
    checked = 0
    latest = kv_utils.latest_version()
    versions = sorted(set(args.kube_version + [latest]), key=kv_utils.Version)

    # 1. Built objects against the Kubernetes schemas.
    built = sorted(glob.glob(os.path.join(args.built, "*.yaml")))
    if not built:
        failures.append(f"no built manifests in {args.built}")
    for path in built:
        for doc in load_docs(path):
            for v in versions:
                checked += 1
                name = f"{os.path.basename(path)} {doc.get('kind')}/{doc.get('metadata', {}).get('name')} @ {v}"
                try:
                    kubernetes_validate.validate(doc, v, strict=True)
                except kubernetes_validate.ValidationError as e:
                    path_s = ".".join(str(p) for p in e.path)
                    failures.append(f"{name}: {path_s}: {e.message}")
                except Exception as e:  # unknown kind, unsupported version
                    failures.append(f"{name}: {type(e).__name__}: {getattr(e, 'message', e)}")
    print(f"kubernetes-validate --strict {', '.join(versions)}: {len(built)} files")

    # 2. Good samples.
    schema = crd_schema(args.crd)
    json_schema = to_json_schema(schema)
    good = sorted(glob.glob(os.path.join(args.examples, "*.yaml")))
    if not good:
        failures.append(f"no samples in {args.examples}")
    for path in good:
        checked += 1
        docs = load_docs(path)
        errors, cel = check_ingester(schema, json_schema, docs)
        for e in errors:
            failures.append(f"{path}: schema: {e}")
        for p, rule, msg in cel:
            failures.append(f"{path}: CEL rule at {p} is false ({msg}): {rule}")
        # Re-applying the same object is an update that changes nothing: the
        # transition rules must let it through.
        _, cel = check_ingester(schema, json_schema, [docs[-1], docs[-1]])
        for p, rule, msg in cel:
            failures.append(f"{path}: no-op update: CEL rule at {p} is false ({msg}): {rule}")
    print(f"good samples: {len(good)}")

    # 3. Bad samples, each rejected for its stated reason.
    bad = sorted(glob.glob(os.path.join(args.examples, "invalid", "*.yaml")))
    if not bad:
        failures.append(f"no invalid samples in {args.examples}/invalid")
    for path in bad:
        checked += 1
        exp = expectation(path)
        if exp is None:
            failures.append(f"{path}: first line must be `# expect: schema|cel <text>`")
            continue
        kind, text = exp
        errors, cel = check_ingester(schema, json_schema, load_docs(path))
        if kind == "schema":
            if not any(text in e for e in errors):
                failures.append(
                    f"{path}: expected a schema error containing {text!r}; got {errors or 'none'}"
                )
        elif kind == "cel":
            if errors:
                failures.append(f"{path}: expected only a CEL failure, but the schema rejects it: {errors}")
            if not any(text in msg for _, _, msg in cel):
                failures.append(
                    f"{path}: expected a CEL rule with message containing {text!r} to fail; "
                    f"failed: {[m for _, _, m in cel] or 'none'}"
                )
        else:
            failures.append(f"{path}: unknown expectation {kind!r}")
    print(f"invalid samples: {len(bad)}")

    for f in failures:
        print(f"FAIL {f}")
    print(f"checks: {checked}, failures: {len(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
