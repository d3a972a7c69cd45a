"""A self-contained HTML view of a graph: works offline, from a single file.

The page holds the SVG diagram inline, a table with one row per node, and a detail panel.
Clicking a node in the diagram or a table row shows its primitive, params, shape, role,
operands, costs, value and user source line. The node records travel as JSON inside the
page; a small inline script does the rest (no external scripts, styles or fonts).

For testing in a headless browser the page acts on its URL fragment at load time:
``#click=<id>`` clicks that node's SVG element, ``#clickrow=<id>`` its table row.
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..ir import Graph
from .dot import COLORS, dot_available, to_svg
from .model import View, describe
from .stats import graph_stats

__all__ = ["notebook_html", "to_html"]

_CSS = """
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0;
       color: #111827; background: #ffffff; }
header { padding: 10px 16px; border-bottom: 1px solid #e5e7eb; background: #f9fafb; }
header h1 { font-size: 18px; margin: 0 0 4px 0; }
header p { margin: 2px 0; font-size: 13px; color: #374151; }
.swatch { display: inline-block; width: 12px; height: 12px; border: 2px solid; vertical-align: -2px;
          margin: 0 4px 0 10px; border-radius: 3px; }
main { display: flex; align-items: flex-start; gap: 12px; padding: 12px 16px; }
#diagram { flex: 1 1 auto; min-width: 0; overflow: auto; border: 1px solid #e5e7eb; border-radius: 6px;
           padding: 6px; }
#diagram svg { max-width: 100%; height: auto; display: block; margin: 0 auto; }
#diagram g.node { cursor: pointer; }
#diagram g.node.selected polygon, #diagram g.node.selected path, #diagram g.node.selected ellipse {
  stroke: #111827; stroke-width: 3.5; }
#detail { flex: 0 0 340px; position: sticky; top: 8px; border: 1px solid #e5e7eb; border-radius: 6px;
          padding: 10px 12px; font-size: 13px; background: #fafafa; }
#detail h2 { font-size: 15px; margin: 0 0 8px 0; }
#detail dl { display: grid; grid-template-columns: max-content 1fr; gap: 3px 10px; margin: 0; }
#detail dt { color: #6b7280; }
#detail dd { margin: 0; overflow-wrap: anywhere; font-family: ui-monospace, Menlo, Consolas, monospace; }
#detail pre { background: #111827; color: #f9fafb; padding: 6px 8px; border-radius: 4px;
              white-space: pre-wrap; font-size: 12px; margin: 8px 0 0 0; }
section#nodes { padding: 0 16px 16px 16px; }
table { border-collapse: collapse; font-size: 12px; width: 100%; }
th, td { border-bottom: 1px solid #e5e7eb; padding: 3px 6px; text-align: left; vertical-align: top; }
th { background: #f3f4f6; position: sticky; top: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.mono { font-family: ui-monospace, Menlo, Consolas, monospace; }
tbody tr { cursor: pointer; }
tbody tr:hover { background: #f3f4f6; }
tbody tr.selected { background: #fef9c3; }
tr.tangent td:first-child { border-left: 4px solid TANGENT; }
tr.primal td:first-child { border-left: 4px solid PRIMAL; }
"""

_SCRIPT = """
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("tg-data").textContent);
  var byId = {};
  data.nodes.forEach(function (n) { byId[n.id] = n; });
  var panel = document.getElementById("detail");

  function add(dl, key, value) {
    if (value === null || value === undefined || value === "") return;
    var dt = document.createElement("dt"); dt.textContent = key;
    var dd = document.createElement("dd"); dd.textContent = String(value);
    dd.className = "field-" + key.replace(/\\W+/g, "-");
    dl.appendChild(dt); dl.appendChild(dd);
  }

  function select(id) {
    var n = byId[id];
    if (!n) return;
    document.querySelectorAll(".selected").forEach(function (e) { e.classList.remove("selected"); });
    var g = document.getElementById(id);
    if (g) g.classList.add("selected");
    var row = document.querySelector('tr[data-node="' + id + '"]');
    if (row) row.classList.add("selected");
    panel.innerHTML = "";
    var h = document.createElement("h2");
    h.textContent = n.name + " \\u2014 " + (n.primitive || n.kind);
    panel.appendChild(h);
    var dl = document.createElement("dl");
    add(dl, "node", n.id);
    add(dl, "kind", n.kind);
    add(dl, "role", n.role);
    add(dl, "primitive", n.primitive);
    add(dl, "params", n.params_text);
    add(dl, "operands", n.operands.join(", "));
    add(dl, "shape", n.aval);
    add(dl, "value", n.value);
    add(dl, "FLOPs", n.kind === "node" ? n.flops : null);
    add(dl, "bytes", n.kind === "node" ? n.bytes : null);
    add(dl, "fusion group", n.group);
    var where = n.source_function ? n.source + " in " + n.source_function : n.source;
    add(dl, "source", n.source ? where : null);
    add(dl, "file", n.source_file);
    panel.appendChild(dl);
    if (n.source_line) {
      var pre = document.createElement("pre");
      pre.className = "source-line";
      pre.textContent = n.source_line;
      panel.appendChild(pre);
    }
    panel.setAttribute("data-selected", id);
  }

  document.querySelectorAll("#diagram g.node").forEach(function (g) {
    g.addEventListener("click", function (ev) { ev.preventDefault(); select(g.id); });
  });
  document.querySelectorAll("tr[data-node]").forEach(function (row) {
    row.addEventListener("click", function () { select(row.getAttribute("data-node")); });
  });

  function fromHash() {  // #click=<id> clicks the diagram node, #clickrow=<id> the table row
    var m = /^#(click|clickrow)=(.+)$/.exec(location.hash);
    if (!m) return;
    var id = decodeURIComponent(m[2]);
    var target = m[1] === "click" ? document.getElementById(id)
                                   : document.querySelector('tr[data-node="' + id + '"]');
    if (target) target.dispatchEvent(new MouseEvent("click", {bubbles: true, cancelable: true}));
  }
  window.addEventListener("hashchange", fromHash);
  fromHash();
})();
"""


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _json_for_script(obj: Any) -> str:
    # "<" escaped so no value can close the <script> element early
    return json.dumps(obj, default=str, ensure_ascii=False).replace("<", "\\u003c")


def _table(view: View) -> str:
    has_values = any(n.value is not None for n in view.nodes)
    head = ["name", "kind", "primitive", "params", "operands", "shape", "role", "FLOPs", "bytes", "source"]
    if has_values:
        head.insert(6, "value")
    rows = ["<table id='node-table'><thead><tr>" + "".join(f"<th>{h}</th>" for h in head)
            + "</tr></thead><tbody>"]
    for n in view.nodes:
        cells = [
            f"<td class='mono'>{_e(n.name)}</td>", f"<td>{_e(n.kind)}</td>",
            f"<td>{_e(n.primitive or '')}</td>", f"<td class='mono'>{_e(n.params_text)}</td>",
            f"<td class='mono'>{_e(' '.join(n.operands))}</td>", f"<td class='mono'>{_e(n.aval)}</td>",
            f"<td>{_e(n.role)}</td>",
            f"<td class='num'>{n.flops if n.kind == 'node' else ''}</td>",
            f"<td class='num'>{n.bytes if n.kind == 'node' else ''}</td>",
            f"<td class='mono'>{_e(n.source or '')}</td>",
        ]
        if has_values:
            cells.insert(6, f"<td class='mono'>{_e(n.value or '')}</td>")
        rows.append(f"<tr data-node='{_e(n.id)}' class='{_e(n.role)}'>" + "".join(cells) + "</tr>")
    rows.append("</tbody></table>")
    return "\n".join(rows)


def to_html(graph: Graph, path: str | Path | None = None, *, values: Any = None) -> str:
    """The page as text; also written to ``path`` when given. Needs Graphviz for the SVG."""
    view = describe(graph, values)
    svg = to_svg(view)
    stats = graph_stats(graph)
    (pf, pb), (tf, tb) = COLORS["primal"], COLORS["tangent"]
    css = _CSS.replace("TANGENT", tb).replace("PRIMAL", pb)
    payload = {"name": view.name, "nodes": [asdict(n) for n in view.nodes],
               "edges": [asdict(e) for e in view.edges]}
    summary = stats.summary().replace("\n", " · ")
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tracegrad graph {_e(view.name)}</title>
<style>{css}</style>
</head>
<body>
<header>
<h1>tracegrad graph <code>{_e(view.name)}</code></h1>
<p class="summary">{_e(summary)}</p>
<p class="legend"><span class="swatch" style="background:{pf};border-color:{pb}"></span>primal
<span class="swatch" style="background:{tf};border-color:{tb}"></span>tangent
· inputs: downward houses · outputs: double octagons · click a node or a row for details</p>
</header>
<main>
<section id="diagram">
{svg}
</section>
<aside id="detail" data-selected=""><h2>Details</h2><p>Click a node in the diagram or a row of the table.</p></aside>
</main>
<section id="nodes">
{_table(view)}
</section>
<script type="application/json" id="tg-data">{_json_for_script(payload)}</script>
<script>{_SCRIPT}</script>
</body>
</html>
"""
    if path is not None:
        Path(path).write_text(page, encoding="utf-8")
    return page


def notebook_html(graph: Graph) -> str:
    """For Jupyter's ``_repr_html_``: the inline SVG (or the listing without Graphviz) and
    the cost summary; no scripts, since notebooks may not run them."""
    summary = _e(graph_stats(graph).summary())
    if dot_available():
        body = to_svg(graph)
    else:
        body = f"<pre>{_e(graph.pretty(source=True))}</pre>"
    return f"<div class='tracegrad-graph'>{body}<pre style='font-size:11px'>{summary}</pre></div>"
