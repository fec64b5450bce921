#!/usr/bin/env python3
"""A small kustomize renderer for machines without kubectl or kustomize.

It implements exactly the kustomize features deploy/k8s uses, with kustomize's semantics:

- `resources`: YAML files (all their documents) and directories holding a kustomization
  (rendered recursively, as bases);
- `namespace`: sets metadata.namespace of every namespaced object (overriding any), and the name
  of Namespace objects, like kustomize's namespace transformer;
- `images`: `name` → `newName` / `newTag` / `digest`, on every `containers[]` and
  `initContainers[]` image;
- `patches` with `path:` or `patch:` holding a strategic merge patch that names its target by
  apiVersion/kind/metadata.name (and optionally namespace). Maps merge; `null` deletes; lists of
  objects merge by their Kubernetes patch merge key (containers, env, volumes by `name`,
  volumeMounts by `mountPath`, container ports by `containerPort`, Service ports by `port`, …);
  every other list is replaced.

Anything else in a kustomization (generators, labels, replicas, JSON patches, `$patch`
directives, components, …) is refused with an error rather than silently mis-rendered.
`make k8s-validate` compares this renderer's output with `kubectl kustomize` whenever kubectl
is installed, so the two cannot drift apart unnoticed.

    python3 deploy/k8s/tools/kustomize_lite.py deploy/k8s/overlays/dev > rendered.yaml

Needs PyYAML.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import yaml

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SUPPORTED_FIELDS = {"apiVersion", "kind", "namespace", "resources", "images", "patches"}

CLUSTER_SCOPED = {
    "Namespace", "Node", "PersistentVolume", "StorageClass", "PriorityClass", "IngressClass",
    "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "APIService",
    "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration", "RuntimeClass",
    "CSIDriver", "VolumeSnapshotClass",
}

# Strategic-merge keys of the list fields, by the name of the list and (where it differs) of the
# map that holds it. Lists not named here are replaced by a patch, as kustomize does for lists
# whose schema has no merge strategy.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "topologySpreadConstraints": "topologyKey",
    "hostAliases": "ip",
}


class RenderError(Exception):
    pass


def load_docs(path: Path) -> list[dict]:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def kustomization_file(directory: Path) -> Path:
    for name in KUSTOMIZATION_FILES:
        p = directory / name
        if p.is_file():
            return p
    raise RenderError(f"{directory}: no kustomization.yaml")


def obj_id(o: dict) -> tuple[str, str, str, str]:
    md = o.get("metadata") or {}
    return (o.get("apiVersion", ""), o.get("kind", ""), md.get("namespace") or "", md.get("name", ""))


# ---------------------------------------------------------------------------------------------
# strategic merge patch


def _merge_key(field: str, parent_is_container: bool, parent_kind_service: bool) -> str | None:
    if field == "ports":
        if parent_is_container:
            return "containerPort"
        if parent_kind_service:
            return "port"
        return None
    return MERGE_KEYS.get(field)


def smp(target, patch, *, in_container: bool = False, service_spec: bool = False):
    """Apply a strategic merge patch `patch` to `target` (both plain YAML data); returns the result."""
    if not isinstance(patch, dict) or not isinstance(target, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target)
    for k, v in patch.items():
        if isinstance(k, str) and k.startswith("$"):
            raise RenderError(f"strategic-merge directive {k} is not supported by kustomize_lite")
        if v is None:
            out.pop(k, None)
            continue
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = smp(out[k], v, service_spec=(k == "spec" and service_spec))
            continue
        if isinstance(v, list) and isinstance(out.get(k), list):
            key = _merge_key(k, in_container, service_spec)
            if key and all(isinstance(i, dict) for i in v + out[k]):
                merged = [copy.deepcopy(i) for i in out[k]]
                for item in v:
                    if key not in item:
                        raise RenderError(f"patch list item under {k} lacks its merge key {key}")
                    for i, existing in enumerate(merged):
                        if existing.get(key) == item[key]:
                            merged[i] = smp(existing, item, in_container=k in ("containers", "initContainers", "ephemeralContainers"))
                            break
                    else:
                        merged.append(copy.deepcopy(item))
                out[k] = merged
                continue
        out[k] = copy.deepcopy(v)
    return out


def apply_patch(objects: list[dict], patch: dict, origin: str) -> None:
    md = patch.get("metadata") or {}
    want = (patch.get("apiVersion"), patch.get("kind"), md.get("name"), md.get("namespace"))
    hits = [
        i for i, o in enumerate(objects)
        if o.get("kind") == want[1]
        and o.get("apiVersion") == want[0]
        and (o.get("metadata") or {}).get("name") == want[2]
        and (want[3] is None or (o.get("metadata") or {}).get("namespace") == want[3])
    ]
    if len(hits) != 1:
        raise RenderError(f"{origin}: patch for {want[1]}/{want[2]} matches {len(hits)} objects")
    i = hits[0]
    objects[i] = smp(objects[i], patch, service_spec=objects[i].get("kind") == "Service")


# ---------------------------------------------------------------------------------------------
# transformers


def set_namespace(objects: list[dict], ns: str) -> None:
    for o in objects:
        md = o.setdefault("metadata", {})
        if o.get("kind") == "Namespace":
            md["name"] = ns
        elif o.get("kind") not in CLUSTER_SCOPED:
            md["namespace"] = ns


def split_image(image: str) -> tuple[str, str, str]:
    digest = ""
    if "@" in image:
        image, digest = image.split("@", 1)
    name, tag = image, ""
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = image.rsplit(":", 1)
    return name, tag, digest


def set_images(objects: list[dict], images: list[dict]) -> None:
    def visit(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("containers", "initContainers") and isinstance(v, list):
                    for c in v:
                        if isinstance(c, dict) and isinstance(c.get("image"), str):
                            c["image"] = rewrite(c["image"])
                visit(v)
        elif isinstance(node, list):
            for v in node:
                visit(v)

    def rewrite(image: str) -> str:
        name, tag, digest = split_image(image)
        for rule in images:
            if rule.get("name") != name:
                continue
            name = rule.get("newName", name)
            if "digest" in rule:
                return f"{name}@{rule['digest']}"
            if "newTag" in rule:
                tag, digest = str(rule["newTag"]), ""
            break
        out = name + (f":{tag}" if tag else "")
        return out + (f"@{digest}" if digest else "")

    for o in objects:
        visit(o)


# ---------------------------------------------------------------------------------------------


def render(directory: Path) -> list[dict]:
    directory = Path(directory)
    kfile = kustomization_file(directory)
    k = yaml.safe_load(kfile.read_text()) or {}
    unknown = set(k) - SUPPORTED_FIELDS
    if unknown:
        raise RenderError(f"{kfile}: fields not supported by kustomize_lite: {', '.join(sorted(unknown))}")
    objects: list[dict] = []
    for entry in k.get("resources") or []:
        p = (directory / entry).resolve()
        if p.is_dir():
            objects.extend(render(p))
        elif p.is_file():
            objects.extend(load_docs(p))
        else:
            raise RenderError(f"{kfile}: resource {entry} not found")
    seen = set()
    for o in objects:
        if obj_id(o) in seen:
            raise RenderError(f"{kfile}: duplicate object {obj_id(o)}")
        seen.add(obj_id(o))
    for entry in k.get("patches") or []:
        if set(entry) - {"path", "patch"}:
            raise RenderError(f"{kfile}: only `path:` / `patch:` strategic merge patches are supported")
        if "path" in entry:
            docs = load_docs(directory / entry["path"])
            origin = f"{kfile.parent}/{entry['path']}"
        else:
            docs = [d for d in yaml.safe_load_all(entry["patch"]) if d is not None]
            origin = f"{kfile}: inline patch"
        for d in docs:
            if "op" in d or isinstance(d, list):
                raise RenderError(f"{origin}: JSON 6902 patches are not supported")
            apply_patch(objects, d, origin)
    if k.get("namespace"):
        set_namespace(objects, k["namespace"])
    if k.get("images"):
        set_images(objects, k["images"])
    return objects


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        print(f"usage: {argv[0]} DIRECTORY", file=sys.stderr)
        return 2
    try:
        objects = render(Path(argv[1]))
    except RenderError as e:
        print(f"kustomize_lite: {e}", file=sys.stderr)
        return 1
    yaml.safe_dump_all(objects, sys.stdout, sort_keys=True, default_flow_style=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
