#!/usr/bin/env python3
"""Checks the Ingesters in rendered chart output against the CRD.

    check_ingesters.py --crd crds/ingester.yaml --expect N RENDERED.yaml

kubernetes-validate skips custom resources, so every `sluice.dev` object in
RENDERED.yaml is defaulted as the API server would, validated against the
CRD's OpenAPI schema with unknown fields rejected, and its CEL rules
evaluated — with the same functions operator/tests/check_manifests.py uses
for the operator's samples. Exit status 0 only if exactly N Ingesters were
found and all of them are valid.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../../../operator/tests"))
import check_manifests as cm  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--crd", required=True)
    ap.add_argument("--expect", type=int, required=True)
    ap.add_argument("rendered")
    args = ap.parse_args()

    schema = cm.crd_schema(args.crd)
    json_schema = cm.to_json_schema(schema)
    found = 0
    failures = []
    for doc in cm.load_docs(args.rendered):
        if not str(doc.get("apiVersion", "")).startswith("sluice.dev/"):
            continue
        found += 1
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        errors, cel = cm.check_ingester(schema, json_schema, [doc])
        failures += [f"{name}: schema: {e}" for e in errors]
        failures += [f"{name}: CEL rule at {p} is false ({m}): {r}" for p, r, m in cel]
        print(f"checked {name}")
    if found != args.expect:
        failures.append(f"expected {args.expect} sluice.dev objects, found {found}")
    for f in failures:
        print(f"FAIL {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
