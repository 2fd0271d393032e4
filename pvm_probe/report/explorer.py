"""The token explorer: one answer token by token, and where the model looked when it wrote each token.

Tokens are shaded by the backbone's image share of attention (layer selectable); claims are underlined
green (correct) or red (wrong). Clicking or hovering a token draws the image with the backbone's attention
over its patches for that token and layer, and, for a PVM variant, PVM's retrieval weights per block. The
data comes from the records' `explore` entries (the runner keeps them for the first requests); the page
needs no network: the data is inline JSON and the code a few lines of plain JavaScript on canvases.
"""

from __future__ import annotations

import json

SIDE = 256  # canvas size in px


def explorer_answers(records: list[dict]) -> list[dict]:
    """The explorer's data: one entry per explored (variant, request), controls left out."""
    answers = []
    for r in records:
        explore = r.get("explore")
        if not explore or " | " in r["variant"]:
            continue
        index = [r["mass"]["layers"].index(layer) for layer in explore["layers"]]
        answer = {"variant": r["variant"], "id": r["id"], "image": explore["image"], "cells": explore["cells"],
                  "layers": explore["layers"], "pieces": r["pieces"], "mass": [r["mass"]["image"][i] for i in index],
                  "attention": explore["attention"],
                  "claims": [{"token": c["token"], "correct": c["correct"], "text": c["text"],
                              "boxes": c.get("boxes", [])}
                             for c in r["claims"] if c["token"] is not None]}
        if "pvm" in explore:
            answer |= {"pvm_layers": explore["pvm_layers"], "pvm": explore["pvm"]}
        answers.append(answer)
    return answers


def answer_html(record: dict) -> str:
    """One answer as static HTML: each token shaded by the backbone's image share (mean over layers, when the
    probes ran), claims underlined green (correct) or red (wrong), the claim's text on hover."""
    import html

    mass = record.get("mass", {}).get("image")
    shade = [sum(v or 0 for v in col) / len(col) for col in zip(*mass, strict=True)] if mass else []
    top = max(shade, default=0) or 1.0
    claims = {c["token"]: c for c in record["claims"] if c["token"] is not None}
    spans = []
    for t, piece in enumerate(record["pieces"]):
        style = f"background:rgba(31,119,180,{0.75 * shade[t] / top:.3f});" if shade else ""
        if t in claims:
            style += f"border-bottom:3px solid {'#2ca02c' if claims[t]['correct'] else '#d62728'};"
        title = html.escape(claims[t]["text"], quote=True) if t in claims else ""
        spans.append(f'<span style="{style}" title="{title}">{html.escape(piece)}</span>')
    return f'<div style="font-family:monospace;line-height:1.9;white-space:pre-wrap">{"".join(spans)}</div>'


def explorer_html(records: list[dict]) -> str:
    """The explorer section (empty string if no record was explored)."""
    answers = explorer_answers(records)
    if not answers:
        return ""
    data = json.dumps({"answers": answers}, separators=(",", ":")).replace("</", "<\\/")
    return f"""<section id="explorer"><h2>Token explorer</h2>
<p class="caption">One answer, token by token. Each token is shaded by the backbone's share of attention on the
image when it was written (darker = more; layer below); claims are underlined, green when correct and red
when wrong. Click or hover a token to see where the backbone looked among the image patches (left) and, for a
PVM variant, where each PVM block looked (right). Under dilution, late tokens go pale while PVM's maps stay
sharp on the region the claim is about.</p>
<div class="ex-controls"><label>answer <select id="ex-answer"></select></label>
<label>layer <select id="ex-layer"></select></label> <span id="ex-status"></span></div>
<div class="ex-body"><div id="ex-tokens" class="ex-tokens"></div>
<div class="ex-maps"><figure><canvas id="ex-backbone" width="{SIDE}" height="{SIDE}"></canvas>
<figcaption id="ex-backbone-caption">backbone</figcaption></figure><div id="ex-pvm"></div></div></div>
<script type="application/json" id="explorer-data">{data}</script>
<script>{_SCRIPT}</script></section>"""


_SCRIPT = """
(function () {
  const data = JSON.parse(document.getElementById('explorer-data').textContent);
  const answerSel = document.getElementById('ex-answer'), layerSel = document.getElementById('ex-layer');
  const tokensBox = document.getElementById('ex-tokens'), pvmBox = document.getElementById('ex-pvm');
  const images = data.answers.map(a => { const im = new Image(); im.src = a.image; return im; });
  let answer = null, image = null, token = 0;
  data.answers.forEach((a, i) => answerSel.add(new Option(a.variant + ' | ' + a.id, i)));
  function finite(v) { return v !== null && Number.isFinite(v); }
  function draw(canvas, weights) {
    const ctx = canvas.getContext('2d'), W = canvas.width, H = canvas.height;
    ctx.clearRect(0, 0, W, H);
    if (image.complete) ctx.drawImage(image, 0, 0, W, H);
    ctx.fillStyle = 'rgba(0,0,0,0.45)'; ctx.fillRect(0, 0, W, H);
    const top = Math.max(1e-12, ...weights.filter(finite));
    answer.cells.forEach((c, k) => {
      const w = finite(weights[k]) ? weights[k] / top : 0;
      ctx.fillStyle = 'rgba(255,215,0,' + (0.85 * w).toFixed(3) + ')';
      ctx.fillRect(c[0] * W, c[1] * H, (c[2] - c[0]) * W, (c[3] - c[1]) * H);
    });
    canvas.dataset.token = String(token);
  }
  function select(t) {
    token = t;
    tokensBox.querySelectorAll('.sel').forEach(s => s.classList.remove('sel'));
    const span = tokensBox.querySelector('[data-t="' + t + '"]');
    if (span) span.classList.add('sel');
    const l = Number(layerSel.value), piece = JSON.stringify(answer.pieces[t]);
    draw(document.getElementById('ex-backbone'), answer.attention[l][t]);
    document.getElementById('ex-backbone-caption').textContent =
      'backbone, layer ' + answer.layers[l] + ', token ' + t + ' ' + piece;
    (answer.pvm || []).forEach((block, k) => {
      draw(document.getElementById('ex-pvm-' + k), block[t]);
    });
  }
  function renderTokens() {
    const l = Number(layerSel.value), mass = answer.mass[l];
    const top = Math.max(1e-12, ...mass.filter(finite));
    const claims = {};
    answer.claims.forEach(c => { claims[c.token] = c; });
    tokensBox.textContent = '';
    answer.pieces.forEach((p, t) => {
      const span = document.createElement('span');
      span.textContent = p; span.dataset.t = String(t);
      const m = finite(mass[t]) ? mass[t] : 0;
      span.style.background = 'rgba(31,119,180,' + (0.75 * m / top).toFixed(3) + ')';
      span.title = 'token ' + t + ': image share ' + (finite(mass[t]) ? mass[t].toFixed(4) : 'n/a');
      if (claims[t]) { span.className = claims[t].correct ? 'ok' : 'bad'; span.title += ' | ' + claims[t].text; }
      span.addEventListener('click', () => select(t));
      span.addEventListener('mouseenter', () => select(t));
      tokensBox.appendChild(span);
    });
  }
  function showAnswer() {
    answer = data.answers[Number(answerSel.value)]; image = images[Number(answerSel.value)];
    layerSel.textContent = '';
    answer.layers.forEach((layer, i) => layerSel.add(new Option('layer ' + layer, i)));
    layerSel.value = String(answer.layers.length - 1);
    pvmBox.textContent = '';
    (answer.pvm_layers || []).forEach((layer, k) => {
      const fig = document.createElement('figure'), canvas = document.createElement('canvas');
      canvas.width = canvas.height = """ + str(SIDE) + """; canvas.id = 'ex-pvm-' + k;
      const cap = document.createElement('figcaption'); cap.textContent = 'PVM block at layer ' + layer;
      fig.appendChild(canvas); fig.appendChild(cap); pvmBox.appendChild(fig);
    });
    renderTokens();
    const first = answer.claims.length ? answer.claims[answer.claims.length - 1].token : 0;
    const go = () => select(first);
    if (image.complete) go(); else image.onload = go;
  }
  answerSel.addEventListener('change', showAnswer);
  layerSel.addEventListener('change', () => { renderTokens(); select(token); });
  showAnswer();
  document.getElementById('ex-status').textContent = data.answers.length + ' answers';
})();
"""
