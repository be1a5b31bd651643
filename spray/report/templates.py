"""HTML templates (jinja2), the stylesheet and the pages' scripts.

The report is a folder: pages link ``assets/`` (this stylesheet, the scripts below and plotly.js,
copied from the installed plotly package) and the per-class sprite sheets by relative paths, so it
opens offline from disk; nothing is fetched from a network."""

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1180px;padding:16px 24px;
color:#222;line-height:1.45}
h1{font-size:1.55em;margin:.2em 0}h2{font-size:1.22em;margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:2px}
h3{font-size:1.02em;margin:.2em 0}
table{border-collapse:collapse;width:100%;font-size:.9em;table-layout:fixed}
th,td{border:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:top;overflow-wrap:anywhere}
th{background:#f4f4f4}tr.flagged td{background:#fff1f0}
figure{margin:0}figcaption,.caption{font-size:.86em;color:#555}
.flag{color:#b71c1c;font-weight:600}.ok{color:#2e7d32}.muted{color:#666;font-size:.9em}
.card{border:1px solid #e0e0e0;border-radius:6px;padding:10px 12px;margin:12px 0}
.card.flagged{border-color:#e57373;background:#fffafa}
code{background:#f4f4f4;padding:0 3px}
.row{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}
.sprite{display:inline-block;background-repeat:no-repeat;image-rendering:pixelated;position:relative;flex:none;
border:1px solid #ccc;box-sizing:content-box}
.sprite.smooth{image-rendering:auto}
.grey{filter:grayscale(1)}
.overlay{position:relative;display:inline-block;flex:none}
.overlay .sprite{position:absolute;left:0;top:0}
.overlay .sprite.heat{mix-blend-mode:multiply}
.box{position:absolute;border:2px solid #d00000;box-sizing:border-box;pointer-events:none}
.box.plain{border:2px dashed #333}
.examples{display:grid;gap:6px 8px;align-items:start}
.examples .lbl{font-size:.75em;color:#555;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.examples .head{font-size:.78em;color:#333;align-self:center}
.colourbar{display:flex;flex-wrap:wrap;align-items:center;gap:8px;font-size:.85em;color:#333;margin:12px 0}
.colourbar .bar{width:260px;height:16px;border:1px solid #999;
background:linear-gradient(to right,#0000ff,#ffffff 50%,#ff0000)}
.proto{display:flex;flex-direction:column;gap:4px;width:min-content}
.proto .t{font-size:.85em}
.mapwrap{display:flex;gap:14px;align-items:flex-start;flex-wrap:wrap}
#map{flex:1 1 560px;min-width:320px;height:520px;border:1px solid #e0e0e0}
#preview{flex:0 0 260px;font-size:.86em;border:1px solid #e0e0e0;border-radius:6px;padding:8px;min-height:200px}
#preview .pics{display:flex;gap:6px;flex-wrap:wrap}
#preview .pics figure{display:flex;flex-direction:column;align-items:center}
.controls{display:flex;flex-wrap:wrap;gap:10px 16px;align-items:center;margin:6px 0;font-size:.9em}
.controls select,.controls button,.controls input{font-size:1em}
button{cursor:pointer}
#selection{font-size:.9em;margin:6px 0}
.findings .card{display:flex;gap:14px;flex-wrap:wrap}
.findings .text{flex:1 1 380px;min-width:0}
.pager{display:flex;gap:10px;align-items:center;margin:8px 0;font-size:.9em;flex-wrap:wrap}
ol.next li{margin:4px 0}
"""

MACROS = """
{% macro sprite(sheet, pos, size, prefix='', cls='') -%}
{%- set scale = size / sheet.w -%}
<span class="sprite {{ cls }}{% if sheet.w > 48 %} smooth{% endif %}" style="width:{{ size }}px;height:{{ (sheet.h * scale)|round(1) }}px;
background-image:url('{{ prefix }}{{ sheet.file }}');background-size:{{ (sheet.cols * sheet.w * scale)|round(1) }}px {{ (sheet.rows * sheet.h * scale)|round(1) }}px;
background-position:-{{ ((pos % sheet.cols) * sheet.w * scale)|round(1) }}px -{{ ((pos // sheet.cols) * sheet.h * scale)|round(1) }}px">{{ caller() if caller else '' }}</span>
{%- endmacro %}
{% macro boxed(sheet, pos, size, box, shape, flagged, prefix='') -%}
{% call sprite(sheet, pos, size, prefix) %}{% if box %}<span class="box{% if not flagged %} plain{% endif %}" style="left:{{ (100 * box[1] / shape[1])|round(2) }}%;top:{{ (100 * box[0] / shape[0])|round(2) }}%;width:{{ (100 * (box[3] - box[1]) / shape[1])|round(2) }}%;height:{{ (100 * (box[2] - box[0]) / shape[0])|round(2) }}%"></span>{% endif %}{% endcall %}
{%- endmacro %}
{% macro colourbar() -%}
<div class="colourbar"><span>against the class</span><span class="bar" role="img" aria-label="blue: negative relevance, white: none, red: positive"></span><span>for the class</span>
<span class="muted">blue -1 &middot; white 0 &middot; red +1, each map scaled to its own 99.5th percentile of |relevance|</span></div>
{%- endmacro %}
"""

INDEX = MACROS + """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>spray audit: {{ run.name }}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="stylesheet" href="assets/spray.css"></head>
<body>
<h1>spray audit: {{ run.name }}</h1>
<p class="muted">{{ run.samples }} samples in {{ run.n_classes }} classes; {{ run.accuracy_words }}.<br>
LRP composite: {{ run.composite_words }}.<br>Generated {{ run.created }}; a cluster is flagged from suspicion {{ "%.2f"|format(run.threshold) }}.
{% if run.bed %}<br>Test bed <b>{{ run.bed.name }}</b>, planted: {% for name, s in run.bed.shortcuts.items() %}{{ name }} in class
{{ s.class }} (putting it on other classes' test images flips {{ "%.0f"|format(100 * s.flip_rate) }}% of them, against a base rate of
{{ "%.0f"|format(100 * s.base_rate) }}%){% if not loop.last %}; {% endif %}{% endfor %}: the model does use {% if run.bed.shortcuts|length > 1 %}them{% else %}it{% endif %}.{% endif %}</p>

<h2>Findings, most suspicious first</h2>
{% if flagged %}
<div class="findings">
{% for f in flagged %}
<div class="card flagged" id="finding-{{ loop.index }}">
<div class="proto">{{ boxed(f.sheets.prototypes, f.cluster + 1, 132, f.box, f.shape, true, f.prefix) }}<span class="t muted">cluster mean heatmap, hot spot boxed</span></div>
<div class="examples" style="grid-template-columns:repeat({{ f.examples|length }}, 64px)">
{% for e in f.examples %}{% call sprite(f.sheets.images, e.pos, 64, f.prefix) %}{% endcall %}{% endfor %}
{% for e in f.examples %}{% call sprite(f.sheets.heatmaps, e.pos, 64, f.prefix) %}{% endcall %}{% endfor %}
</div>
<div class="text"><h3>{{ loop.index }}. <a href="{{ f.href }}">class {{ f.class_name }}</a>, cluster {{ f.cluster }}:
{{ f.size }} images ({{ "%.0f"|format(100 * f.share) }}% of the class), suspicion {{ "%.2f"|format(f.score) }}</h3>
<p>{{ f.reason[:1]|upper }}{{ f.reason[1:] }}.</p><p><b>{{ f.flip_words }}</b></p>
<p class="muted">Hot spot: {{ f.box_words }}.</p></div>
</div>
{% endfor %}
</div>
{{ colourbar() }}
{% else %}<p class="ok">No cluster in any class reached the suspicion threshold ({{ "%.2f"|format(run.threshold) }}).</p>{% endif %}

<h2>What to do next</h2>
<ol class="next">
{% if flagged %}
<li>Review the {{ review_count }} images of the flagged findings: <a href="review.csv">review.csv</a> lists them (class, cluster,
sample id, store row, suspicion, flip rate). Each class page shows them in its map; select any group there and export its ids.</li>
<li>For each one decide: a shortcut in the data (a tag, a border, a background) to remove or fix, a mislabelled image, or a
legitimate second way the class looks (then nothing to do).</li>
<li>Clean the data (remove or repair those images), retrain the model, and audit the new model with the same job and a new
<code>out:</code> folder (<code>spray run my-job.yaml --set out=reports/after-cleaning</code>); compare the two reports: the cluster
should be gone and its flip test should no longer flip.</li>
{% else %}
<li>Nothing was flagged. Skim the classes below, ranked by how much they deserve a look; open a class and use its map to
look at small, separate groups of images yourself.</li>
<li>The verdict holds for this model and these images: re-run after retraining or after the data changed (a new <code>out:</code> folder).</li>
{% endif %}
</ol>

<h2>Classes</h2>
<p class="caption">Ranked: classes with a flagged cluster first (most suspicious first), then by how much the rest deserve a
look{% if run.has_attention %} (the analysis's attention score){% else %} (their highest cluster suspicion){% endif %}.
Each row links to the class page.</p>
<div class="pager"><label>Find <input id="filter" type="search" placeholder="class name or label"></label>
<label><input id="flagged-only" type="checkbox"> only flagged</label>
<button id="prev" type="button">&larr; previous</button><span id="page-info"></span><button id="next" type="button">next &rarr;</button></div>
<table id="classes"><colgroup><col style="width:6%"><col style="width:20%"><col style="width:8%"><col style="width:7%">
<col style="width:13%"><col style="width:12%"><col style="width:34%"></colgroup>
<thead><tr><th>rank</th><th>class</th><th>images</th><th>k</th><th>flagged clusters</th><th>top suspicion</th><th>why look</th></tr></thead>
<tbody></tbody></table>
<noscript><p>The class table needs JavaScript; every class is also in <a href="summary.json">summary.json</a>.</p></noscript>
{% if skipped %}<p class="muted">Not analysed: {% for s in skipped %}class {{ s.label }} ({{ s.reason }}){% if not loop.last %}, {% endif %}{% endfor %}.</p>{% endif %}
<p class="muted">Machine-readable: <a href="summary.json">summary.json</a>, <a href="review.csv">review.csv</a>. Store: <code>{{ run.store }}</code>.</p>
<script type="application/json" id="spray-classes">{{ classes|tojson }}</script>
<script src="assets/spray-index.js"></script>
</body></html>
"""

CLASS = MACROS + """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>spray: class {{ c.name }}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="stylesheet" href="../assets/spray.css"></head>
<body>
<p><a href="../index.html">&larr; all classes</a></p>
<h1>Class {{ c.name }}{% if c.name != c.label|string %} <span class="muted">(label {{ c.label }})</span>{% endif %}</h1>
<p>{{ c.n }} images; {{ c.accuracy_words }}.
{% if c.flagged %}<span class="flag">Flagged: cluster {{ c.flagged|join(", ") }}: {{ c.review_count }} images to review.</span>
{% else %}<span class="ok">No cluster flagged.</span>{% endif %}</p>

<h2>Map of the class</h2>
<p class="caption">Each dot is one image; dots close together have similar heatmaps ({{ c.map_words }}). Hover a dot to see the
image and its heatmap, click to keep it; drag to select a box, or choose lasso; scroll or use the toolbar to zoom and pan.
{% if c.score_kind == 'sample' %}Suspicion per image comes from the analysis.{% else %}Colour by suspicion shows each image's
cluster score (at the chosen k).{% endif %}</p>
<div class="controls">
<label>colour by <select id="colour"><option value="cluster">cluster</option><option value="score">suspicion</option></select></label>
<label>k <select id="k">{% for k in c.ks %}<option value="{{ k }}"{% if k == c.k %} selected{% endif %}>{{ k }}{% if k == c.k %} (chosen){% endif %}</option>{% endfor %}</select></label>
{% if c.maps|length > 1 %}<label>map <select id="embedding">{% for m in c.maps %}<option value="{{ m }}">{{ m }}</option>{% endfor %}</select></label>{% endif %}
<span>select by <button type="button" data-drag="select">box</button> <button type="button" data-drag="lasso">lasso</button>
<button type="button" data-drag="pan">pan</button> <button type="button" data-drag="zoom">zoom</button></span>
</div>
<div class="mapwrap"><div id="map"></div>
<div id="preview"><p class="muted">Hover a dot: its image, heatmap and overlay appear here.</p></div></div>
<div id="selection"><span id="selection-count">Nothing selected.</span>
<button type="button" id="export-csv" disabled>export CSV</button> <button type="button" id="export-json" disabled>export JSON</button>
<button type="button" id="clear" disabled>clear</button></div>
{{ colourbar() }}

<h2>How many strategies: the spectrum</h2>
<div class="row"><div id="spectrum" style="flex:1 1 420px;height:280px"></div>
<p class="caption" style="flex:1 1 320px">{{ c.eigengap_words }} The graph has {{ c.components }} connected part(s).</p></div>

<h2>Prototypes</h2>
<div class="row">
{% for p in c.prototypes %}<div class="proto">{{ boxed(c.sheets.prototypes, loop.index0, 200, p.box, c.shape, p.flagged) }}
<span class="t{% if p.flagged %} flag{% endif %}">{{ p.title }}</span></div>{% endfor %}
</div>
{{ colourbar() }}
<p class="caption">Mean LRP heatmap (each image's map normalised to unit absolute sum) of the whole class, then of each
cluster; boxes: each cluster's hot spot (solid red: flagged, dashed: not flagged).</p>

<h2>Clusters at k = {{ c.k }}</h2>
{% for cl in c.clusters %}
<div class="card{% if cl.flagged %} flagged{% endif %}" id="cluster-{{ cl.cluster }}">
<h3>Cluster {{ cl.cluster }}: {{ cl.size }} images ({{ "%.0f"|format(100 * cl.share) }}% of the class),
{% if cl.flagged %}<span class="flag">flagged</span>{% else %}<span class="ok">not flagged</span>{% endif %}
{% if cl.flagged %}<button type="button" data-select-finding="{{ cl.cluster }}">select its {{ cl.n_carriers }} images in the map</button>
{% else %}<button type="button" data-select-cluster="{{ cl.cluster }}">select in the map</button>{% endif %}</h3>
<p>{{ cl.reason[:1]|upper }}{{ cl.reason[1:] }}.</p>
{% if cl.flip_words %}<p><b>{{ cl.flip_words }}</b></p>{% endif %}
<p class="muted">What the numbers mean: {{ cl.score_words }}; {{ cl.separation_words }}. Hot spot: {{ cl.box_words }}.</p>
{% set t = [96, (1000 / [cl.examples|length, 1]|max - 10)|int]|min %}
<div class="examples" style="grid-template-columns:70px repeat({{ cl.examples|length }}, {{ t }}px)">
<span class="head">image</span>{% for e in cl.examples %}{% call sprite(c.sheets.images, e.pos, t) %}{% endcall %}{% endfor %}
<span class="head">heatmap</span>{% for e in cl.examples %}{% call sprite(c.sheets.heatmaps, e.pos, t) %}{% endcall %}{% endfor %}
<span class="head">overlay</span>{% for e in cl.examples %}<span class="overlay" style="width:{{ t }}px;height:{{ (t * c.sheets.images.h / c.sheets.images.w)|round(1) }}px">{% call sprite(c.sheets.images, e.pos, t, '', 'grey') %}{% endcall %}{% call sprite(c.sheets.heatmaps, e.pos, t, '', 'heat') %}{% endcall %}</span>{% endfor %}
<span></span>{% for e in cl.examples %}<span class="lbl" title="{{ e.id }}">{{ e.id }}</span>{% endfor %}
</div>
<p class="caption">The {{ cl.examples|length }} images nearest the cluster's centre in the spectral embedding.</p>
</div>
{% endfor %}

<h2>What to do next</h2>
<ol class="next">
{% if c.flagged %}
<li>Review the {{ c.review_count }} images flagged with cluster {{ c.flagged|join(", ") }}: their ids are in <a href="clusters.csv">clusters.csv</a>
(column <code>review_ids</code>) and <a href="samples.csv">samples.csv</a> (column <code>in_finding</code>); "select its images in the map" above
and export them, or select any other group.</li>
<li>Decide for each: a shortcut to remove from the data, a wrong label, or a legitimate second way the class looks.</li>
<li>Clean the data, retrain, and audit the new model with a new <code>out:</code> folder; the cluster should be gone and its
flip test should no longer flip.</li>
{% else %}
<li>Nothing was flagged here. Small, separate groups in the map are still worth a look: select one and export its ids.</li>
{% endif %}
</ol>
<p class="muted">Machine-readable: <a href="clusters.csv">clusters.csv</a>, <a href="samples.csv">samples.csv</a>,
<a href="summary.json">summary.json</a>.</p>
<script type="application/json" id="spray-data">{{ data|tojson }}</script>
<script src="../assets/plotly.min.js"></script>
<script src="../assets/spray-class.js"></script>
</body></html>
"""

CLASS_JS = r"""
(function () {
  'use strict';
  const D = JSON.parse(document.getElementById('spray-data').textContent);
  const map = document.getElementById('map');
  const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#9467bd', '#8c564b', '#e377c2', '#17becf', '#bcbd22',
                   '#7f7f7f', '#aec7e8', '#ffbb78', '#98df8a'];
  const state = {k: D.k, colour: 'cluster', emb: D.maps[0], selected: new Set(), pinned: null};
  window.sprayState = state;
  const labelsAt = k => D.clusterings[String(k)];
  const type = D.n > 3000 ? 'scattergl' : 'scatter';

  function colourOf(c) { return c < 0 ? '#bbbbbb' : PALETTE[c % PALETTE.length]; }

  function selectedIn(members) {
    if (!state.selected.size) return null;
    const out = [];
    members.forEach((i, j) => { if (state.selected.has(i)) out.push(j); });
    return out;
  }

  function traces() {
    const e = D.emb[state.emb];
    const lab = labelsAt(state.k);
    if (state.colour === 'score') {
      const all = D.ids.map((_, i) => i);
      return [{type, mode: 'markers', name: 'images', x: e.x, y: e.y, customdata: all, text: D.ids,
               hovertemplate: '%{text}<extra></extra>', selectedpoints: selectedIn(all), showlegend: false,
               marker: {size: 7, color: D.score, cmin: 0, cmax: D.score_max, line: {width: 0.5, color: '#666'},
                        colorscale: [[0, '#e0e0e0'], [0.5, '#fdae61'], [1, '#a50f15']],
                        colorbar: {title: {text: 'suspicion<br>(flagged from ' + D.threshold.toFixed(2) + ')'},
                                   thickness: 14, len: 0.8}}}];
    }
    const clusters = Array.from(new Set(lab)).sort((a, b) => a - b);
    return clusters.map(c => {
      const members = [];
      lab.forEach((v, i) => { if (v === c) members.push(i); });
      const flagged = state.k === D.k && D.flagged.includes(c);
      return {type, mode: 'markers', customdata: members, text: members.map(i => D.ids[i]),
              hovertemplate: '%{text}<extra></extra>',
              name: (c < 0 ? 'noise' : 'cluster ' + c) + (flagged ? ' (flagged)' : '') + ' · ' + members.length,
              x: members.map(i => e.x[i]), y: members.map(i => e.y[i]), selectedpoints: selectedIn(members),
              marker: {size: flagged ? 9 : 7, color: colourOf(c), symbol: flagged ? 'diamond' : 'circle',
                       line: flagged ? {color: '#b00000', width: 1.5} : {width: 0}}};
    });
  }

  const layout = () => ({margin: {l: 30, r: 10, t: 10, b: 30}, dragmode: state.drag || 'select', hovermode: 'closest',
                         legend: {orientation: 'h', y: -0.08}, xaxis: {zeroline: false}, yaxis: {zeroline: false},
                         uirevision: state.emb});
  const config = {displaylogo: false, responsive: true, scrollZoom: true,
                  modeBarButtonsToRemove: ['toImage', 'sendDataToCloud']};

  function draw() { return Plotly.react(map, traces(), layout(), config); }

  function sprite(sheet, pos, size, extra) {
    const s = size / sheet.w;
    const c = pos % sheet.cols, r = Math.floor(pos / sheet.cols);
    return '<span class="sprite ' + (extra || '') + (sheet.w > 48 ? ' smooth' : '') + '" style="width:' + size + 'px;height:' +
      (sheet.h * s) + 'px;background-image:url(\'' + sheet.file + '\');background-size:' + (sheet.cols * sheet.w * s) + 'px ' +
      (sheet.rows * sheet.h * s) + 'px;background-position:-' + (c * sheet.w * s) + 'px -' + (r * sheet.h * s) + 'px"></span>';
  }

  function escape(text) {
    return String(text).replace(/[&<>"']/g, ch => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'}[ch]));
  }

  function showPreview(i) {
    const box = document.getElementById('preview');
    const lab = labelsAt(state.k)[i];
    const flagged = state.k === D.k && D.flagged.includes(lab);
    const pos = D.pos[i];
    let pics = '<p class="muted">No preview kept for this image (the report keeps ' + D.previews + ' per class).</p>';
    if (pos >= 0) {
      const size = 112, h = size * D.sheets.images.h / D.sheets.images.w;
      pics = '<div class="pics"><figure>' + sprite(D.sheets.images, pos, size) + '<figcaption>image</figcaption></figure>' +
             '<figure>' + sprite(D.sheets.heatmaps, pos, size) + '<figcaption>heatmap</figcaption></figure>' +
             '<figure><span class="overlay" style="width:' + size + 'px;height:' + h + 'px">' +
             sprite(D.sheets.images, pos, size, 'grey') + sprite(D.sheets.heatmaps, pos, size, 'heat') +
             '</span><figcaption>overlay</figcaption></figure></div>';
    }
    box.innerHTML = '<div class="preview-id"><b>' + escape(D.ids[i]) + '</b></div>' + pics +
      '<div>store row ' + D.rows[i] + '; cluster ' + lab + ' at k = ' + state.k +
      (flagged ? ' <span class="flag">(flagged)</span>' : '') + '<br>suspicion ' + D.score[i].toFixed(2) +
      (D.score_kind === 'cluster' ? ' (its cluster\'s, at k = ' + D.k + ')' : '') + (state.pinned === i ? '<br><i>kept (click another dot)</i>' : '') +
      '</div>';
    box.dataset.sample = String(i);
  }

  function exportRows() {
    const lab = labelsAt(state.k);
    const finding = new Set(Object.values(D.carriers).flat());
    return Array.from(state.selected).sort((a, b) => a - b).map(i => ({
      id: D.ids[i], row: D.rows[i], cluster: lab[i], k: state.k, flagged: state.k === D.k && D.flagged.includes(lab[i]),
      in_finding: finding.has(i), suspicion: Number(D.score[i].toFixed(4))}));
  }

  function csv(rows) {
    const quote = v => { const s = String(v); return /[",\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s; };
    const head = ['id', 'row', 'cluster', 'k', 'flagged', 'in_finding', 'suspicion'];
    return [head.join(',')].concat(rows.map(r => head.map(h => quote(r[h])).join(','))).join('\n') + '\n';
  }

  function download(name, text, mime) {
    const url = URL.createObjectURL(new Blob([text], {type: mime}));
    const a = document.createElement('a');
    a.href = url; a.download = name; document.body.appendChild(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 2000);
  }

  function updateSelection() {
    const n = state.selected.size;
    document.getElementById('selection-count').textContent = n ? n + ' image(s) selected' : 'Nothing selected.';
    for (const id of ['export-csv', 'export-json', 'clear']) document.getElementById(id).disabled = !n;
  }

  async function select(indices) {
    state.quiet = true;                       // clearing the drawn box must not clear the new selection
    try {
      await Plotly.relayout(map, {selections: []});
      state.selected = new Set(indices);
      updateSelection();
      await draw();
    } finally {
      state.quiet = false;
    }
  }

  function redraw() {
    draw();
    const shown = document.getElementById('preview').dataset.sample;
    if (shown !== undefined) showPreview(Number(shown));
  }
  window.spraySelect = select;

  const base = 'class-' + String(D.label).padStart(8, '0') + '-selection';
  document.getElementById('export-csv').addEventListener('click', () => download(base + '.csv', csv(exportRows()), 'text/csv'));
  document.getElementById('export-json').addEventListener('click', () => download(base + '.json',
    JSON.stringify({class: D.label, name: D.name, k: state.k, samples: exportRows()}, null, 1), 'application/json'));
  document.getElementById('clear').addEventListener('click', () => select([]));
  document.getElementById('colour').addEventListener('change', ev => { state.colour = ev.target.value; redraw(); });
  document.getElementById('k').addEventListener('change', ev => { state.k = Number(ev.target.value); redraw(); });
  const emb = document.getElementById('embedding');
  if (emb) emb.addEventListener('change', ev => { state.emb = ev.target.value; redraw(); });
  document.querySelectorAll('[data-drag]').forEach(b => b.addEventListener('click', () => {
    state.drag = b.dataset.drag; Plotly.relayout(map, {dragmode: state.drag}); }));
  document.querySelectorAll('[data-select-cluster]').forEach(b => b.addEventListener('click', () => {
    const c = Number(b.dataset.selectCluster);
    state.k = D.k; document.getElementById('k').value = String(D.k);
    select(labelsAt(D.k).map((v, i) => v === c ? i : -1).filter(i => i >= 0));
    map.scrollIntoView({behavior: 'smooth', block: 'center'});
  }));
  // a flagged finding's samples: its cluster's members, or for a background the look-alike group around it
  document.querySelectorAll('[data-select-finding]').forEach(b => b.addEventListener('click', () => {
    state.k = D.k; document.getElementById('k').value = String(D.k);
    select(D.carriers[b.dataset.selectFinding]);
    map.scrollIntoView({behavior: 'smooth', block: 'center'});
  }));

  draw().then(() => {
    map.on('plotly_hover', ev => { if (state.pinned === null) showPreview(ev.points[0].customdata); });
    map.on('plotly_click', ev => { const i = ev.points[0].customdata; state.pinned = i; showPreview(i); });
    map.on('plotly_selected', ev => {
      if (!ev || !ev.points || state.quiet) return;
      state.selected = new Set(ev.points.map(p => p.customdata)); updateSelection();
    });
    map.on('plotly_deselect', () => { if (!state.quiet) { state.selected = new Set(); updateSelection(); } });
    document.body.dataset.ready = 'map';
  });

  const s = D.spectrum;
  const idx = s.values.map((_, i) => i + 1);
  Plotly.newPlot('spectrum', [{type: 'scatter', mode: 'lines+markers', x: idx, y: s.values, name: 'eigenvalue',
                               marker: {size: 6, color: '#1f77b4'}, hovertemplate: 'eigenvalue %{x}: %{y:.3f}<extra></extra>'}],
    {margin: {l: 50, r: 10, t: 30, b: 45},
     xaxis: {title: {text: 'eigenvalue number (smallest first)'}, dtick: 1, range: [0.5, s.values.length + 0.5]},
     yaxis: {title: {text: 'Laplacian eigenvalue'}, rangemode: 'tozero'},
     shapes: [{type: 'rect', xref: 'x', yref: 'paper', x0: s.k + 0.05, x1: s.k + 0.95, y0: 0, y1: 1,
               fillcolor: '#d62728', opacity: 0.15, line: {width: 0}}],
     annotations: [{x: s.k + 0.5, y: 1, yref: 'paper', text: 'jump: k = ' + s.k, showarrow: false, yanchor: 'bottom',
                    font: {color: '#b71c1c'}}]},
    {displaylogo: false, responsive: true, modeBarButtonsToRemove: ['toImage', 'sendDataToCloud']});
})();
"""

INDEX_JS = r"""
(function () {
  'use strict';
  const rows = JSON.parse(document.getElementById('spray-classes').textContent);
  const body = document.querySelector('#classes tbody');
  const filter = document.getElementById('filter');
  const only = document.getElementById('flagged-only');
  const PAGE = 50;
  let page = 0;
  const escape = t => String(t).replace(/[&<>"']/g, ch => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'}[ch]));

  function visible() {
    const q = filter.value.trim().toLowerCase();
    return rows.filter(r => (!only.checked || r.flagged.length) &&
      (!q || String(r.name).toLowerCase().includes(q) || String(r.label) === q));
  }

  function render() {
    const list = visible();
    const pages = Math.max(1, Math.ceil(list.length / PAGE));
    page = Math.min(page, pages - 1);
    body.innerHTML = list.slice(page * PAGE, (page + 1) * PAGE).map(r =>
      '<tr' + (r.flagged.length ? ' class="flagged"' : '') + '><td>' + r.rank + '</td><td><a href="' + r.href + '">' +
      escape(r.name) + '</a>' + (String(r.name) === String(r.label) ? '' : ' <span class="muted">(' + r.label + ')</span>') + '</td><td>' + r.n + '</td><td>' + r.k +
      '</td><td>' + (r.flagged.length ? '<span class="flag">' + r.flagged.join(', ') + '</span>' : '<span class="ok">none</span>') +
      '</td><td>' + r.top_score.toFixed(2) + '</td><td>' + escape(r.why) + '</td></tr>').join('');
    document.getElementById('page-info').textContent = list.length ?
      'page ' + (page + 1) + ' of ' + pages + ' (' + list.length + ' of ' + rows.length + ' classes)' : 'no class matches';
    document.getElementById('prev').disabled = page === 0;
    document.getElementById('next').disabled = page >= pages - 1;
  }
  filter.addEventListener('input', () => { page = 0; render(); });
  only.addEventListener('change', () => { page = 0; render(); });
  document.getElementById('prev').addEventListener('click', () => { page -= 1; render(); });
  document.getElementById('next').addEventListener('click', () => { page += 1; render(); });
  render();
  document.body.dataset.ready = 'index';
})();
"""
