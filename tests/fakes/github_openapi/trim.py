"""Trim GitHub's OpenAPI description (npm @octokit/openapi) to the operations feedback-loop uses.

Usage: python tests/fakes/github_openapi/trim.py octokit-openapi-<version>.tgz
       (or the unpacked `package/generated/api.github.com.json`); writes api.github.com.trimmed.json
       next to this script. Keeps the listed operations verbatim (parameters, request bodies,
       responses) and every component they reach through `$ref`, nothing else; no schema is edited
       (the fake adapts OpenAPI 3.0 `nullable` to JSON Schema when it loads the file).
"""

from __future__ import annotations

import hashlib
import json
import sys
import tarfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "api.github.com.trimmed.json"
MEMBER = "package/generated/api.github.com.json"

# (path, method) -> the operationId it must carry, so a renamed/moved operation fails loudly.
OPERATIONS = {
    ("/repos/{owner}/{repo}", "get"): "repos/get",
    ("/repos/{owner}/{repo}/issues", "get"): "issues/list-for-repo",
    ("/repos/{owner}/{repo}/issues", "post"): "issues/create",
    ("/repos/{owner}/{repo}/issues/{issue_number}", "get"): "issues/get",
    ("/repos/{owner}/{repo}/issues/{issue_number}", "patch"): "issues/update",
    ("/repos/{owner}/{repo}/issues/{issue_number}/comments", "post"): "issues/create-comment",
}


def _load(src: Path) -> tuple[dict[str, Any], str]:
    raw = src.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if src.suffix in (".tgz", ".gz"):
        with tarfile.open(src) as tar:
            f = tar.extractfile(MEMBER)
            if f is None:
                raise SystemExit(f"{MEMBER} not found in {src}")
            return json.loads(f.read()), digest
    return json.loads(raw), digest


def _refs(node: Any) -> set[str]:
    out: set[str] = set()
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            out.add(ref)
        for v in node.values():
            out |= _refs(v)
    elif isinstance(node, list):
        for v in node:
            out |= _refs(v)
    return out


def _lookup(spec: dict[str, Any], ref: str) -> Any:
    if not ref.startswith("#/"):
        raise SystemExit(f"external $ref not supported: {ref}")
    node: Any = spec
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def trim(spec: dict[str, Any]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for (path, method), op_id in OPERATIONS.items():
        op = spec["paths"][path][method]
        if op.get("operationId") != op_id:
            raise SystemExit(f"{method} {path} is {op.get('operationId')!r}, expected {op_id!r}")
        paths.setdefault(path, {})[method] = op
    components: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    todo = _refs(paths)
    while todo:  # transitive closure over $ref
        ref = todo.pop()
        if ref in seen:
            continue
        seen.add(ref)
        _, _, kind, name = ref.split("/", 3)
        target = _lookup(spec, ref)
        components.setdefault(kind, {})[name] = target
        todo |= _refs(target) - seen
    return {
        "openapi": spec["openapi"],
        "info": spec["info"],
        "servers": spec.get("servers", []),
        "paths": paths,
        "components": {k: dict(sorted(v.items())) for k, v in sorted(components.items())},
    }


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit(__doc__)
    src = Path(argv[1])
    spec, digest = _load(src)
    out = trim(spec)
    out["info"] = dict(out["info"]) | {
        "x-feedback-loop-trimmed-from": {
            "package": "@octokit/openapi",
            "version": spec["info"]["version"],
            "file": MEMBER.removeprefix("package/"),
            "input": src.name,
            "input_sha256": digest,
            "operations": sorted(OPERATIONS.values()),
        }
    }
    OUT.write_text(json.dumps(out, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    n = sum(len(v) for v in out["components"].values())
    print(f"wrote {OUT.name}: {len(OPERATIONS)} operations, {n} components")  # noqa: T201


if __name__ == "__main__":
    main(sys.argv)
