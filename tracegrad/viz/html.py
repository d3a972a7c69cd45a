"""A self-contained HTML view of a graph: works offline, from a single file.

The page holds the SVG diagram inline (laid out by Graphviz's ``dot`` when installed, else
by the built-in layered layout: the page says which), a list of the graph's layers (runs of
one user source line, ``model.LineGroup``), a table with one row per node, and a detail
panel. The diagram zooms (wheel, the + / − buttons, "fit", "1:1") and pans (drag); a
layer in the list zooms to its nodes. Clicking a node in the diagram or a table row shows
its primitive, params, shape, role, operands, costs, value and user source line. The node
records travel as JSON inside the page; a small inline script does the rest (no external
scripts, styles or fonts).

For testing in a headless browser the page acts on its URL fragment at load time, one
action after another, joined by ``&``: ``click=<id>`` clicks that node's SVG element,
``clickrow=<id>`` its table row, ``zoom=in|out|fit|actual`` presses that button,
``zoom=<group id>`` clicks that layer in the list, ``wheel=<deltaY>`` turns the wheel over
the diagram's centre, ``drag=<dx>,<dy>`` drags the diagram. The viewport reports its state in ``data-scale``, ``data-fit-scale``
and ``data-tx``/``data-ty``.
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..ir import Graph
from .dot import COLORS, ENGINE_NAMES, pick_engine, to_svg
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
#diagram { flex: 1 1 auto; min-width: 0; border: 1px solid #e5e7eb; border-radius: 6px; }
#toolbar { display: flex; gap: 6px; align-items: center; padding: 4px 6px; border-bottom: 1px solid #e5e7eb;
           background: #f9fafb; font-size: 12px; color: #4b5563; }
#toolbar button { font: inherit; min-width: 30px; padding: 2px 8px; border: 1px solid #d1d5db;
                  border-radius: 4px; background: #fff; cursor: pointer; }
#toolbar button:hover { background: #f3f4f6; }
#viewport { position: relative; height: 74vh; overflow: hidden; cursor: grab; touch-action: none;
            background: #fff; }
#viewport.dragging { cursor: grabbing; }
#viewport svg { position: absolute; left: 0; top: 0; transform-origin: 0 0; max-width: none; }
#diagram g.node { cursor: pointer; }
#diagram g.node.selected polygon, #diagram g.node.selected path, #diagram g.node.selected ellipse,
#diagram g.node.selected rect { stroke: #111827; stroke-width: 3.5; }
#diagram g.cluster.focus > rect, #diagram g.cluster.focus > polygon, #diagram g.cluster.focus > path {
  stroke: #7c3aed; stroke-width: 2.5; }
#side { flex: 0 0 360px; position: sticky; top: 8px; display: flex; flex-direction: column; gap: 10px; }
#layers { border: 1px solid #e5e7eb; border-radius: 6px; padding: 8px 10px; font-size: 12px;
          max-height: 36vh; overflow: auto; }
#layers h2 { font-size: 14px; margin: 0 0 6px 0; }
#layers ol { margin: 0; padding-left: 22px; }
#layers li { cursor: pointer; padding: 2px 0; }
#layers li:hover, #layers li.focus { background: #ede9fe; }
#layers code { font-size: 11px; color: #475569; display: block; white-space: nowrap; overflow: hidden;
               text-overflow: ellipsis; }
#detail { border: 1px solid #e5e7eb; border-radius: 6px;
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

  // -- zoom and pan: the SVG is scaled and moved with a CSS transform
  var vp = document.getElementById("viewport");
  var svg = vp.querySelector("svg");
  var box = svg.viewBox && svg.viewBox.baseVal && svg.viewBox.baseVal.width ? svg.viewBox.baseVal
                                                                             : svg.getBBox();
  var W = box.width, H = box.height;
  svg.setAttribute("width", W); svg.setAttribute("height", H);
  var s = 1, tx = 0, ty = 0, fitScale = 1;
  function apply() {
    svg.style.transform = "translate(" + tx + "px," + ty + "px) scale(" + s + ")";
    vp.setAttribute("data-scale", s.toFixed(5));
    vp.setAttribute("data-tx", tx.toFixed(1)); vp.setAttribute("data-ty", ty.toFixed(1));
    document.getElementById("zoom-level").textContent = Math.round(s * 100) + "%";
  }
  function zoomAt(f, px, py) {
    var ns = Math.min(8, Math.max(0.01, s * f));
    f = ns / s; tx = px - (px - tx) * f; ty = py - (py - ty) * f; s = ns; apply();
  }
  function centre(f) { var r = vp.getBoundingClientRect(); zoomAt(f, r.width / 2, r.height / 2); }
  function fit() {
    var r = vp.getBoundingClientRect();
    s = fitScale = Math.min(r.width / W, r.height / H) * 0.98;
    tx = (r.width - W * s) / 2; ty = (r.height - H * s) / 2;
    vp.setAttribute("data-fit-scale", fitScale.toFixed(5)); apply();
  }
  function actual() { var r = vp.getBoundingClientRect(); s = 1; tx = (r.width - W) / 2; ty = 0; apply(); }
  function zoomTo(els) {  // fit elements (a layer's nodes) into the view, at most at 150%
    var r = null, v = vp.getBoundingClientRect();
    els.forEach(function (el) {
      var b = el.getBoundingClientRect();
      r = r === null ? {left: b.left, top: b.top, right: b.right, bottom: b.bottom}
                     : {left: Math.min(r.left, b.left), top: Math.min(r.top, b.top),
                        right: Math.max(r.right, b.right), bottom: Math.max(r.bottom, b.bottom)};
    });
    if (r === null) return;
    r.width = r.right - r.left; r.height = r.bottom - r.top;
    var x0 = (r.left - v.left - tx) / s, y0 = (r.top - v.top - ty) / s, w = r.width / s, h = r.height / s;
    s = Math.min(v.width / w, v.height / h, 1.5) * 0.96;
    tx = (v.width - w * s) / 2 - x0 * s; ty = (v.height - h * s) / 2 - y0 * s; apply();
  }
  vp.addEventListener("wheel", function (ev) {
    ev.preventDefault();
    var r = vp.getBoundingClientRect();
    zoomAt(Math.exp(-ev.deltaY * 0.0015), ev.clientX - r.left, ev.clientY - r.top);
  }, {passive: false});
  var drag = null, moved = 0;
  vp.addEventListener("pointerdown", function (ev) {
    if (ev.button !== 0) return;
    drag = {x: ev.clientX, y: ev.clientY}; moved = 0; vp.classList.add("dragging");
  });
  window.addEventListener("pointermove", function (ev) {
    if (!drag) return;
    var dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
    moved += Math.abs(dx) + Math.abs(dy); tx += dx; ty += dy; drag = {x: ev.clientX, y: ev.clientY}; apply();
  });
  window.addEventListener("pointerup", function () { drag = null; vp.classList.remove("dragging"); });
  var buttons = {"zoom-in": function () { centre(1.25); }, "zoom-out": function () { centre(0.8); },
                 "zoom-fit": fit, "zoom-actual": actual};
  Object.keys(buttons).forEach(function (id) {
    document.getElementById(id).addEventListener("click", buttons[id]);
  });
  document.querySelectorAll("#layers li[data-group]").forEach(function (li) {
    li.addEventListener("click", function () {
      var g = document.getElementById(li.getAttribute("data-group"));
      document.querySelectorAll(".focus").forEach(function (e) { e.classList.remove("focus"); });
      li.classList.add("focus");
      var gid = li.getAttribute("data-group");
      var members = data.nodes.filter(function (n) { return n.line_group === gid; })
                              .map(function (n) { return document.getElementById(n.id); })
                              .filter(function (e) { return e !== null; });
      if (g) g.classList.add("focus");
      zoomTo(members.length ? members : (g ? [g] : []));
    });
  });
  fit();

  document.querySelectorAll("#diagram g.node").forEach(function (g) {
    g.addEventListener("click", function (ev) {
      ev.preventDefault();
      if (moved > 4) return;  // the end of a drag, not a click
      select(g.id);
    });
  });
  document.querySelectorAll("tr[data-node]").forEach(function (row) {
    row.addEventListener("click", function () { select(row.getAttribute("data-node")); });
  });

  function fromHash() {  // actions for tests, joined by "&" (see the module docstring)
    location.hash.replace(/^#/, "").split("&").forEach(function (action) {
      var m = /^(click|clickrow|zoom|wheel|drag)=(.+)$/.exec(action);
      if (!m) return;
      var arg = decodeURIComponent(m[2]), target = null;
      if (m[1] === "drag") {  // drag=<dx>,<dy>: press in the middle, move, release
        var d = arg.split(",").map(Number), c = vp.getBoundingClientRect();
        var x = c.left + c.width / 2, y = c.top + c.height / 2;
        var ev = function (type, px, py) {
          return new PointerEvent(type, {clientX: px, clientY: py, button: 0, bubbles: true});
        };
        vp.dispatchEvent(ev("pointerdown", x, y));
        window.dispatchEvent(ev("pointermove", x + d[0], y + d[1]));
        window.dispatchEvent(ev("pointerup", x + d[0], y + d[1]));
        return;
      }
      if (m[1] === "wheel") {
        var r = vp.getBoundingClientRect();
        vp.dispatchEvent(new WheelEvent("wheel", {deltaY: Number(arg), clientX: r.left + r.width / 2,
                                                  clientY: r.top + r.height / 2, bubbles: true,
                                                  cancelable: true}));
        return;
      }
      if (m[1] === "click") target = document.getElementById(arg);
      else if (m[1] === "clickrow") target = document.querySelector('tr[data-node="' + arg + '"]');
      else target = document.getElementById("zoom-" + arg) ||
                    document.querySelector('#layers li[data-group="' + arg + '"]');
      if (target) target.dispatchEvent(new MouseEvent("click", {bubbles: true, cancelable: true}));
    });
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


def _layers(view: View) -> str:
    """The list of layers (line groups): where, the code, and what kind of nodes."""
    if not view.line_groups:
        return ""
    by_id = {n.id: n for n in view.nodes}
    items = []
    for g in view.line_groups:
        members = [by_id[m] for m in g.members if by_id[m].kind == "node"]
        tangent = sum(1 for n in members if n.role == "tangent")
        prims: dict[str, int] = {}
        for n in members:
            prims[n.primitive or ""] = prims.get(n.primitive or "", 0) + 1
        what = ", ".join(f"{p} ×{c}" if c > 1 else p for p, c in prims.items())
        items.append(f"<li data-group='{_e(g.id)}' title='{_e(g.label)}'><b>{_e(g.label)}</b>"
                     f"<code>{_e(g.code or '')}</code>{len(members)} nodes ({len(members) - tangent} primal, "
                     f"{tangent} tangent): {_e(what)}</li>")
    return ("<section id='layers'><h2>Layers, by source line</h2><ol>" + "".join(items)
            + "</ol></section>")


def to_html(graph: Graph, path: str | Path | None = None, *, values: Any = None,
            engine: str = "auto") -> str:
    """The page as text; also written to ``path`` when given. The diagram is laid out by
    Graphviz's ``dot`` when it is installed, else by the built-in layout (``engine``)."""
    view = describe(graph, values)
    used = pick_engine(engine)
    svg = to_svg(view, engine=used)
    engine_note = ("built-in (Graphviz's dot not found)" if used == "builtin" and engine == "auto"
                   else ENGINE_NAMES[used])
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
<div id="toolbar"><button id="zoom-in" title="zoom in">+</button><button id="zoom-out" title="zoom out">−</button>
<button id="zoom-fit" title="fit the whole graph">fit</button><button id="zoom-actual" title="actual size">1:1</button>
<span id="zoom-level"></span><span>· wheel: zoom · drag: pan</span>
<span class="engine" data-engine="{used}">· layout: {_e(engine_note)}</span></div>
<div id="viewport">
{svg}
</div>
</section>
<div id="side">
{_layers(view)}
<aside id="detail" data-selected=""><h2>Details</h2><p>Click a node in the diagram or a row of the table.</p></aside>
</div>
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
    """For Jupyter's ``_repr_html_``: the inline SVG (by ``dot`` or the built-in layout) and
    the cost summary; no scripts, since notebooks may not run them."""
    summary = _e(graph_stats(graph).summary())
    body = to_svg(graph)
    return f"<div class='tracegrad-graph'>{body}<pre style='font-size:11px'>{summary}</pre></div>"
