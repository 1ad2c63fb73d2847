#!/usr/bin/env python3
"""Offline renderer for the Sextant chart (Helm is not packaged in Debian).

Supports exactly the template subset the chart uses, with Helm's semantics:
  {{ .Values.a.b }}  {{ .Release.Namespace }}  {{ .Chart.AppVersion }}  "literals"
  pipes: quote, nindent N, indent N, toYaml (also as a prefix function: toYaml X)
  {{- if X }} ... {{- else }} ... {{- end }}  (truthiness like Go templates)
  {{- range .Values.list }} ... {{ .field }} ... {{- end }}  (`.` is each element)
  whitespace trimming with {{- and -}}
Anything else is an error, so the chart cannot drift into constructs this renderer ignores.

Usage: render.py CHART_DIR [--namespace NS] [--set key.path=value]... [-f values.yaml]...
Prints the multi-document YAML stream that `helm template` would print (without the
"# Source:" comments).
"""
import argparse
import os
import re
import sys

import yaml

TOKEN = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)


def deep_merge(base, over):
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            deep_merge(base[k], v)
        else:
            base[k] = v
    return base


def set_path(values, path, raw):
    try:
        val = yaml.safe_load(raw)
    except yaml.YAMLError:
        val = raw
    keys = path.split(".")
    cur = values
    for k in keys[:-1]:
        cur = cur.setdefault(k, {})
    cur[keys[-1]] = val


def lookup(ctx, ref):
    cur = ctx
    for part in ref.lstrip(".").split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def to_yaml(v):
    if v is None:
        return "null"
    return yaml.safe_dump(v, default_flow_style=False, sort_keys=True).rstrip("\n")


def as_text(v):
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (dict, list)):
        return to_yaml(v)
    return str(v)


def term(ctx, t):
    if t.startswith('"') and t.endswith('"'):
        return t[1:-1]
    if t.startswith("."):
        return lookup(ctx, t)
    if re.fullmatch(r"-?\d+", t):
        return int(t)
    raise SystemExit(f"render.py: unsupported term {t!r}")


def evaluate(ctx, expr):
    stages = [s.strip() for s in expr.split("|")]
    first = stages[0].split()
    if first[0] == "toYaml":
        val = to_yaml(term(ctx, first[1]))
    elif len(first) == 1:
        val = term(ctx, first[0])
    else:
        raise SystemExit(f"render.py: unsupported expression {expr!r}")
    for st in stages[1:]:
        words = st.split()
        fn, args = words[0], words[1:]
        if fn == "quote":
            val = '"' + as_text(val).replace("\\", "\\\\").replace('"', '\\"') + '"'
        elif fn in ("nindent", "indent"):
            pad = " " * int(args[0])
            text = "\n".join(pad + l if l else l for l in as_text(val).rstrip("\n").split("\n"))
            val = ("\n" + text) if fn == "nindent" else text
        elif fn == "toYaml":
            val = to_yaml(val)
        else:
            raise SystemExit(f"render.py: unsupported function {fn!r}")
    return val


def truthy(v):
    return bool(v) and v != 0


def parse(parts, i=0, closers=()):
    """Nests the flat token list: returns (nodes, index after, closer met). A node is
    ("text", s), ("act", expr), ("if", expr, then, else) or ("range", expr, body)."""
    nodes = []
    while i < len(parts):
        p = parts[i]
        i += 1
        if p[0] == "text":
            nodes.append(("text", p[1]))
            continue
        act = p[1]
        if act in closers:
            return nodes, i, act
        if act.startswith("if "):
            then, i, closer = parse(parts, i, ("else", "end"))
            other = []
            if closer == "else":
                other, i, closer = parse(parts, i, ("end",))
            if closer != "end":
                raise SystemExit("render.py: unterminated if")
            nodes.append(("if", act[3:], then, other))
        elif act.startswith("range "):
            body, i, closer = parse(parts, i, ("end",))
            if closer != "end":
                raise SystemExit("render.py: unterminated range")
            nodes.append(("range", act[6:], body))
        elif act in ("else", "end"):
            raise SystemExit(f"render.py: {act} without if or range")
        elif act.startswith("/*"):
            continue
        else:
            nodes.append(("act", act))
    if closers:
        raise SystemExit(f"render.py: missing {{{{ end }}}} (expected one of {closers})")
    return nodes, i, None


def emit(nodes, ctx, out):
    for n in nodes:
        if n[0] == "text":
            out.append(n[1])
        elif n[0] == "act":
            out.append(as_text(evaluate(ctx, n[1])))
        elif n[0] == "if":
            emit(n[2] if truthy(evaluate(ctx, n[1])) else n[3], ctx, out)
        else:
            # range over a list: `.` is each element in turn (Helm's semantics); nothing for an
            # empty or unset list.
            items = evaluate(ctx, n[1]) or []
            if not isinstance(items, list):
                raise SystemExit(f"render.py: range over a non-list {n[1]!r}")
            for item in items:
                emit(n[2], item, out)


def render(text, ctx):
    # Tokenise into text and actions, applying trim markers.
    parts = []
    pos = 0
    for m in TOKEN.finditer(text):
        parts.append(["text", text[pos:m.start()]])
        if m.group(1):
            parts[-1][1] = parts[-1][1].rstrip(" \t\n")
        parts.append(["act", m.group(2), bool(m.group(3))])
        pos = m.end()
    parts.append(["text", text[pos:]])
    for i, p in enumerate(parts):
        if p[0] == "act" and p[2] and i + 1 < len(parts):
            parts[i + 1][1] = parts[i + 1][1].lstrip(" \t\n")
    nodes, _, _ = parse(parts)
    out = []
    emit(nodes, ctx, out)
    return "".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("chart")
    ap.add_argument("--namespace", default="kube-system")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("-f", "--values", action="append", default=[])
    a = ap.parse_args()
    with open(os.path.join(a.chart, "values.yaml")) as f:
        values = yaml.safe_load(f) or {}
    with open(os.path.join(a.chart, "Chart.yaml")) as f:
        chart = yaml.safe_load(f)
    for vf in a.values:
        with open(vf) as f:
            deep_merge(values, yaml.safe_load(f) or {})
    for s in a.set:
        k, _, v = s.partition("=")
        set_path(values, k, v)
    ctx = {
        "Values": values,
        "Release": {"Namespace": a.namespace, "Name": "sextant"},
        "Chart": {"AppVersion": chart.get("appVersion"), "Version": chart.get("version"), "Name": chart.get("name")},
    }
    tdir = os.path.join(a.chart, "templates")
    docs = []
    for name in sorted(os.listdir(tdir)):
        if not name.endswith(".yaml"):
            continue
        with open(os.path.join(tdir, name)) as f:
            out = render(f.read(), ctx).strip("\n")
        for doc in re.split(r"^---\s*$", out, flags=re.M):
            body = "\n".join(l for l in doc.strip("\n").split("\n"))
            if yaml.safe_load(body) is not None:
                docs.append(body.rstrip() + "\n")
    sys.stdout.write("---\n" + "---\n".join(docs))


if __name__ == "__main__":
    main()
