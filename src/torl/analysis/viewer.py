"""A self-contained HTML page to browse trajectories: filters, code / output / errors rendered apart.

Model text is untrusted. The page never builds HTML from data: all data travels as one JSON blob
inside ``<script type="application/json">`` (with ``<``, ``>``, ``&`` and U+2028/9 escaped, so no
string can close the tag), and the script renders it with ``textContent`` only. A strict
Content-Security-Policy (no network, inline style/script and data: images only) backs this up.

Records come from training dumps and eval rows (`sample_record`, which have the trajectory's
segments and calls) or from a run's held-out evaluation rows (`heldout_record`, text only).
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from pathlib import Path

from torl.metrics.behaviour import call_failed, executed_calls, uses_code
from torl.tir.parsing import FENCE, complete_python_blocks

MAX_SEGMENT_CHARS = 20_000
OUTPUT_FENCE = "```output"
# An observation block as the loop writes it ("```output\n<observation>\n```\n"); the last one may be cut.
_OUTPUT_BLOCK = re.compile(r"```output\n(.*?)(?:\n```(?:\n|$)|$)", re.DOTALL)


def observation_text(tool_text: str) -> str:
    """What the interpreter printed, from a tool segment: the ```output fences are protocol, drawn by the box.

    Under ``call_trigger: output_fence`` the model wrote ```output and the segment is "\n<obs>\n```\n";
    under ``block_close`` the loop wrote the whole "```output\n<obs>\n```\n".
    """
    text = tool_text.removeprefix(OUTPUT_FENCE)
    text = text.removeprefix("\n")
    return re.sub(r"\n?```\s*$", "", text)


def _model_text(text: str, before_tool: bool) -> str:
    # The model's own ```output line (output_fence) opens the box that follows: the box shows it.
    return re.sub(r"```output\s*$", "", text) if before_tool else text


def _segments(raw: list[dict], statuses: list[dict]) -> list[dict]:
    """Page segments from trajectory segments; `statuses` (one per tool segment, in order) adds status/stderr."""
    out, status_iter = [], iter(statuses)
    for n, seg in enumerate(raw):
        if seg["kind"] == "tool":
            item = {"kind": "tool", "text": observation_text(seg["text"])[:MAX_SEGMENT_CHARS]}
            item.update(next(status_iter, {}))
        else:
            before_tool = n + 1 < len(raw) and raw[n + 1]["kind"] == "tool"
            item = {"kind": "model", "text": _model_text(seg["text"], before_tool)[:MAX_SEGMENT_CHARS]}
        out.append(item)
    return out


def sample_record(index: int, row: dict, group_key: str) -> dict:
    """What the page needs of one sample row (a training dump row or an eval row)."""
    traj = row.get("trajectory", {})
    calls = executed_calls(traj)
    statuses = []
    for call in calls:
        status = {"status": call["result"]["status"]}
        if call_failed(call):
            status["stderr"] = (call["result"].get("stderr") or "")[-4000:]
        statuses.append(status)
    return {
        "i": index,
        "group": row.get(group_key),
        "qid": str(row.get("question_id", "")),
        "sample": row.get("sample"),
        "problem": str(row.get("problem", ""))[:MAX_SEGMENT_CHARS],
        "gold": str(row.get("gold", "")),
        "extracted": None if row.get("extracted") is None else str(row.get("extracted")),
        "correct": row.get("correct"),
        "reward": row.get("reward") if _finite_or_none(row.get("reward")) else None,
        "code": uses_code(traj),
        "calls": len(calls),
        "skipped": len(traj.get("skipped_calls", [])),
        "failed": sum(call_failed(c) for c in calls),
        "sandbox_error": bool(traj.get("sandbox_error")),
        "truncated": bool(traj.get("truncated")),
        "finish": traj.get("finish_reason", ""),
        "tokens": traj.get("model_tokens", 0) + traj.get("tool_tokens", 0),
        "segments": _segments(traj.get("segments") or [{"kind": "model", "text": traj.get("text", "")}], statuses),
    }


def split_observations(text: str, max_calls: int | None = None) -> list[dict]:
    """A response's text as model / tool segments, for rows that kept only the text (held-out evaluation).

    An ```output block is the interpreter's when a complete ```python block precedes it since the
    last observation and fewer than `max_calls` (C, when known) came before: past C, the model's
    own ```output blocks are its text, as the loop left them.
    """
    segments, start, calls = [], 0, 0
    for m in _OUTPUT_BLOCK.finditer(text):
        if m.start() < start or (max_calls is not None and calls >= max_calls):
            continue
        if not complete_python_blocks(text[start:m.start()] + FENCE):
            continue
        if text[start:m.start()]:
            segments.append({"kind": "model", "text": text[start:m.start()]})
        segments.append({"kind": "tool", "text": m.group(0)})
        start, calls = m.end(), calls + 1
    if text[start:] or not segments:
        segments.append({"kind": "model", "text": text[start:]})
    return segments


def heldout_record(index: int, row: dict, group: str, max_calls: int | None = None) -> dict:
    """A held-out evaluation row (`torl.train.heldout`: text, no calls) as a page record."""
    segments = split_observations(str(row.get("text", "")), max_calls)
    return {
        "i": index, "group": group, "qid": str(row.get("question_id", "")), "sample": None,
        "problem": str(row.get("problem", ""))[:MAX_SEGMENT_CHARS], "gold": str(row.get("gold", "")),
        "extracted": None if row.get("extracted") is None else str(row.get("extracted")),
        "correct": row.get("correct"), "reward": None, "code": bool(row.get("used_code")),
        "calls": sum(s["kind"] == "tool" for s in segments), "skipped": None, "failed": 0,
        "sandbox_error": bool(row.get("sandbox_error")), "truncated": False, "finish": "greedy (held-out)",
        "tokens": None, "segments": _segments(segments, []),
    }


def _finite_or_none(value) -> bool:
    return value is None or not isinstance(value, float) or math.isfinite(value)


def embed_json(data) -> str:
    """JSON safe inside a <script> element: nothing in it can end the element or start markup."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False)
    for raw, escaped in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(raw, escaped)
    return text


def image_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def render_page(title: str, subtitle: str, records: list[dict], group_key: str,
                tables: list[tuple[str, list[str], list[list[str]]]], images: list[Path], note: str = "",
                headline: str = "") -> str:
    """The whole page. `records`: from `sample_record` / `heldout_record`, each with its own ``i``;
    `tables`: (caption, header, rows) of plain strings (escaped here)."""
    tables_html = "".join(_table_html(caption, header, body) for caption, header, body in tables)
    images_html = "".join(f"<figure>{image_tag(p, p.stem)}</figure>" for p in images)
    values = {
        "TITLE": html.escape(title), "SUBTITLE": html.escape(subtitle), "NOTE": html.escape(note),
        "HEADLINE": html.escape(headline), "GROUP": html.escape(group_key), "TABLES": tables_html, "IMAGES": images_html, "DATA": embed_json(records),
    }
    # One pass: text inserted for one placeholder is never scanned for another.
    return re.sub(r"%(TITLE|SUBTITLE|HEADLINE|NOTE|GROUP|TABLES|IMAGES|DATA)%", lambda m: values[m.group(1)], _PAGE)


def _table_html(caption: str, header: list[str], body: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in body)
    return f'<table class="summary"><caption>{html.escape(caption)}</caption><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'


_PAGE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>%TITLE%</title>
<style>
  :root { --fg:#1f2328; --muted:#59636e; --line:#d1d9e0; --bg:#f6f8fa; --ok:#1a7f37; --bad:#d1242f; --warn:#9a6700; --code:#0b3d91; }
  * { box-sizing: border-box; }
  body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); margin: 0; }
  header { padding: 14px 22px; border-bottom: 1px solid var(--line); background: var(--bg); }
  h1 { font-size: 20px; margin: 0 0 2px; } .sub { color: var(--muted); }
  main { padding: 14px 22px; }
  section { margin-bottom: 20px; }
  h2 { font-size: 16px; margin: 10px 0 8px; }
  table.summary { border-collapse: collapse; margin: 0 18px 12px 0; display: inline-table; vertical-align: top; }
  table.summary caption { text-align: left; font-weight: 600; padding: 4px 0; }
  table.summary th, table.summary td { border: 1px solid var(--line); padding: 3px 8px; text-align: right; }
  table.summary th:first-child, table.summary td:first-child { text-align: left; }
  table.summary thead { background: var(--bg); }
  .figures { display: flex; flex-wrap: wrap; gap: 10px; } figure { margin: 0; } figure img { max-width: 100%; border: 1px solid var(--line); }
  .filters { display: flex; flex-wrap: wrap; gap: 14px; align-items: center; padding: 10px 12px; background: var(--bg);
             border: 1px solid var(--line); border-radius: 6px; position: sticky; top: 0; z-index: 2; }
  .filters .grp { display: flex; gap: 4px; align-items: center; } .filters .lbl { color: var(--muted); margin-right: 2px; }
  .filters button { border: 1px solid var(--line); background: #fff; border-radius: 5px; padding: 3px 9px; cursor: pointer; font: inherit; }
  .filters button.active { background: var(--fg); color: #fff; border-color: var(--fg); }
  .filters input, .filters select { font: inherit; padding: 3px 6px; border: 1px solid var(--line); border-radius: 5px; }
  #count { margin-left: auto; color: var(--muted); }
  table.samples { border-collapse: collapse; width: 100%; margin-top: 10px; }
  table.samples th { position: sticky; top: 48px; background: #fff; text-align: left; border-bottom: 2px solid var(--line); padding: 5px 6px; font-size: 12px; color: var(--muted); }
  table.samples td { border-bottom: 1px solid var(--line); padding: 5px 6px; vertical-align: top; }
  tr.sample { cursor: pointer; } tr.sample:hover { background: #f3f6fa; } tr.sample.open { background: #eef4ff; }
  .problem-cell { max-width: 560px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
  .badge { display: inline-block; padding: 0 7px; border-radius: 10px; font-size: 12px; font-weight: 600; }
  .b-ok { background: #dafbe1; color: var(--ok); } .b-bad { background: #ffebe9; color: var(--bad); } .b-na { background: #fff8c5; color: var(--warn); }
  .b-code { background: #ddf4ff; color: var(--code); } .b-err { background: #ffebe9; color: var(--bad); } .b-muted { background: var(--bg); color: var(--muted); }
  tr.detail td { background: #fbfcfd; padding: 10px 14px 16px; }
  .meta { color: var(--muted); margin-bottom: 8px; } .meta b { color: var(--fg); }
  .qtext { white-space: pre-wrap; margin: 4px 0 10px; padding: 8px 10px; border-left: 3px solid var(--line); background: #fff; }
  .seg { margin: 6px 0; white-space: pre-wrap; word-break: break-word; font-size: 13px; }
  .prose { padding: 2px 2px; }
  pre { margin: 0; white-space: pre-wrap; word-break: break-word; font: 12.5px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
  .codeblock { border: 1px solid #9ec5fe; background: #f0f6ff; border-radius: 6px; padding: 6px 10px; }
  .output { border: 1px solid #a6d9b4; background: #f2fbf4; border-radius: 6px; padding: 6px 10px; }
  .output.failed { border-color: #ffb4ac; background: #fff3f1; }
  .tag { font: 600 11px system-ui, sans-serif; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); margin-bottom: 2px; }
  .output.failed .tag, .stderr .tag { color: var(--bad); }
  .stderr { border: 1px dashed #ffb4ac; background: #fff; border-radius: 6px; padding: 6px 10px; margin-top: 4px; color: var(--bad); }
  .empty { color: var(--muted); padding: 18px; text-align: center; }
  .headline { margin-top: 6px; font-size: 15px; font-weight: 600; } .headline:empty { display: none; }
  .hint { color: var(--muted); margin: 0 0 8px; }
  .chev { display: inline-block; width: 1.1em; color: var(--muted); }
</style>
</head>
<body>
<header><h1>%TITLE%</h1><div class="sub">%SUBTITLE%</div><div class="headline" id="headline">%HEADLINE%</div></header>
<main>
<section id="summary"><h2>Summary</h2>%TABLES%<div class="sub">%NOTE%</div></section>
<section id="plots"><div class="figures">%IMAGES%</div></section>
<section id="browser">
  <h2>Trajectories</h2>
  <p class="hint" id="expand-hint">Click a row (&#9656;) to open its trajectory: the model's text, each code block and what the interpreter printed; click again to close it.</p>
  <div class="filters" role="toolbar">
    <div class="grp" data-filter="correct"><span class="lbl">answer</span>
      <button data-value="all" class="active">all</button><button data-value="correct">correct</button>
      <button data-value="incorrect">incorrect</button><button data-value="unscored">unscored</button></div>
    <div class="grp" data-filter="code"><span class="lbl">code</span>
      <button data-value="all" class="active">all</button><button data-value="with">with code</button>
      <button data-value="without">without code</button></div>
    <div class="grp" data-filter="errors"><span class="lbl">errors</span>
      <button data-value="all" class="active">all</button><button data-value="failed">failed call</button>
      <button data-value="sandbox">sandbox error</button><button data-value="truncated">truncated</button></div>
    <div class="grp"><span class="lbl">%GROUP%</span><select id="group"><option value="">all</option></select></div>
    <div class="grp"><input id="search" type="search" placeholder="search problem / text"></div>
    <span id="count"></span>
  </div>
  <table class="samples">
    <thead><tr><th>%GROUP%</th><th>question</th><th>answer</th><th>code</th><th>calls</th><th>tokens</th><th>problem</th></tr></thead>
    <tbody id="rows"></tbody>
  </table>
  <div id="empty" class="empty" hidden>No trajectory matches these filters.</div>
</section>
</main>
<script type="application/json" id="torl-data">%DATA%</script>
<script>
"use strict";
(function () {
  const DATA = JSON.parse(document.getElementById("torl-data").textContent);
  const MANY_SAMPLES = DATA.some(function (r) { return r.sample > 0; });
  const state = { correct: "all", code: "all", errors: "all", group: "", search: "" };
  const tbody = document.getElementById("rows");

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function badge(text, cls) { return el("span", "badge " + cls, text); }

  function answerBadge(r) {
    if (r.correct === true) return badge("correct", "b-ok");
    if (r.correct === false) return badge("incorrect", "b-bad");
    return badge(r.sandbox_error ? "sandbox error" : "unscored", "b-na");
  }

  function matches(r) {
    if (state.correct === "correct" && r.correct !== true) return false;
    if (state.correct === "incorrect" && r.correct !== false) return false;
    if (state.correct === "unscored" && r.correct !== null && r.correct !== undefined) return false;
    if (state.code === "with" && !r.code) return false;
    if (state.code === "without" && r.code) return false;
    if (state.errors === "failed" && !(r.failed > 0)) return false;
    if (state.errors === "sandbox" && !r.sandbox_error) return false;
    if (state.errors === "truncated" && !r.truncated) return false;
    if (state.group !== "" && String(r.group) !== state.group) return false;
    if (state.search) {
      const hay = (r.problem + "\n" + r.segments.map(function (s) { return s.text; }).join("")).toLowerCase();
      if (hay.indexOf(state.search) < 0) return false;
    }
    return true;
  }

  // Model text: prose and ```python blocks shown apart (text only, never parsed as HTML).
  function renderModel(text, into) {
    const fence = /```python\n([\s\S]*?)(?:```|$)/g;
    let last = 0, m;
    while ((m = fence.exec(text)) !== null) {
      if (text.slice(last, m.index).trim()) into.appendChild(el("div", "seg prose", text.slice(last, m.index)));
      const block = el("div", "seg codeblock");
      block.appendChild(el("div", "tag", "python"));
      block.appendChild(el("pre", null, m[1].replace(/\n$/, "")));
      into.appendChild(block);
      last = fence.lastIndex;
      if (m[0].length === 0) break;
    }
    if (text.slice(last).trim()) into.appendChild(el("div", "seg prose", text.slice(last)));
  }

  function renderDetail(r) {
    const td = el("td");
    td.colSpan = 7;
    const meta = el("div", "meta");
    const parts = [["gold", r.gold], ["extracted", r.extracted === null ? "none" : r.extracted], ["reward", r.reward],
                   ["finish", r.finish], ["skipped blocks", r.skipped]];
    parts.forEach(function (p, i) {
      if (i) meta.appendChild(document.createTextNode("  ·  "));
      meta.appendChild(el("span", null, p[0] + ": "));
      meta.appendChild(el("b", null, p[1] === null || p[1] === undefined ? "n/a" : p[1]));
    });
    td.appendChild(meta);
    td.appendChild(el("div", "tag", "problem"));
    td.appendChild(el("div", "qtext", r.problem));
    td.appendChild(el("div", "tag", "response"));
    r.segments.forEach(function (s) {
      if (s.kind === "tool") {
        const failed = s.status && s.status !== "ok";
        const box = el("div", "seg output" + (failed ? " failed" : ""));
        box.appendChild(el("div", "tag", "output" + (s.status ? " · " + s.status : "")));
        box.appendChild(el("pre", null, s.text));  // fences already taken off (observation_text)
        if (s.stderr) {
          const err = el("div", "stderr");
          err.appendChild(el("div", "tag", "stderr"));
          err.appendChild(el("pre", null, s.stderr));
          box.appendChild(err);
        }
        td.appendChild(box);
      } else {
        renderModel(s.text, td);
      }
    });
    const tr = el("tr", "detail");
    tr.appendChild(td);
    return tr;
  }

  function rowFor(r) {
    const tr = el("tr", "sample");
    tr.dataset.index = String(r.i);
    const first = el("td");
    const chev = el("span", "chev", "\u25B8");  // ▸ closed, ▾ open
    first.appendChild(chev);
    first.appendChild(document.createTextNode(r.group === null || r.group === undefined ? "" : String(r.group)));
    tr.appendChild(first);
    tr.appendChild(el("td", null, r.qid + (MANY_SAMPLES && r.sample !== null && r.sample !== undefined ? " #" + r.sample : "")));
    const ans = el("td"); ans.appendChild(answerBadge(r)); tr.appendChild(ans);
    const code = el("td");
    code.appendChild(r.code ? badge("code", "b-code") : badge("no code", "b-muted"));
    if (r.failed > 0) { code.appendChild(document.createTextNode(" ")); code.appendChild(badge(r.failed + " failed", "b-err")); }
    if (r.truncated) { code.appendChild(document.createTextNode(" ")); code.appendChild(badge("truncated", "b-na")); }
    tr.appendChild(code);
    tr.appendChild(el("td", null, r.calls));
    tr.appendChild(el("td", null, r.tokens === null ? "n/a" : r.tokens));
    const prob = el("td", "problem-cell", r.problem); prob.title = r.problem; tr.appendChild(prob);
    let detail = null;
    tr.addEventListener("click", function () {
      if (detail) { detail.remove(); detail = null; tr.classList.remove("open"); chev.textContent = "\u25B8"; return; }
      detail = renderDetail(r);
      tr.after(detail);
      tr.classList.add("open");
      chev.textContent = "\u25BE";
    });
    tr._hideDetail = function (hide) { if (detail) detail.hidden = hide; };
    return tr;
  }

  const rows = DATA.map(rowFor);
  rows.forEach(function (tr) { tbody.appendChild(tr); });

  const groups = Array.from(new Set(DATA.map(function (r) { return String(r.group); })));
  const select = document.getElementById("group");
  groups.forEach(function (g) { const o = el("option", null, g); o.value = g; select.appendChild(o); });

  function apply() {
    let shown = 0;
    DATA.forEach(function (r, i) {
      const ok = matches(r);
      rows[i].hidden = !ok;
      rows[i]._hideDetail(!ok);
      if (ok) shown += 1;
    });
    document.getElementById("count").textContent = shown + " of " + DATA.length + " shown";
    document.getElementById("empty").hidden = shown > 0;
  }

  document.querySelectorAll(".grp[data-filter]").forEach(function (grp) {
    grp.querySelectorAll("button").forEach(function (btn) {
      btn.addEventListener("click", function () {
        grp.querySelectorAll("button").forEach(function (b) { b.classList.toggle("active", b === btn); });
        state[grp.dataset.filter] = btn.dataset.value;
        apply();
      });
    });
  });
  // The column titles stick right under the filter bar, however many lines the bar wraps to.
  function stickHeader() {
    const below = document.querySelector(".filters").offsetHeight;
    document.querySelectorAll("table.samples th").forEach(function (th) { th.style.top = below + "px"; });
  }
  window.addEventListener("resize", stickHeader);
  stickHeader();
  select.addEventListener("change", function () { state.group = select.value; apply(); });
  document.getElementById("search").addEventListener("input", function (e) { state.search = e.target.value.toLowerCase(); apply(); });
  apply();
})();
</script>
</body>
</html>
"""
