"""HTML templates (jinja2) for the report: self-contained pages, inline CSS, relative figure links,
nothing fetched from a network."""

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1100px;padding:16px 24px;
color:#222;line-height:1.45}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;width:100%;font-size:.9em;table-layout:fixed}
th,td{border:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:top;overflow-wrap:anywhere}
th{background:#f4f4f4}tr.flagged td{background:#fff1f0}
img{max-width:100%;height:auto;display:block}
.figs{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}.figs figure{margin:0;flex:1 1 320px;min-width:0}
figcaption{font-size:.8em;color:#555}
.flag{color:#b71c1c;font-weight:600}.ok{color:#2e7d32}.muted{color:#666;font-size:.9em}
.card{border:1px solid #e0e0e0;border-radius:6px;padding:8px 12px;margin:10px 0}
.card.flagged{border-color:#e57373;background:#fffafa}
code{background:#f4f4f4;padding:0 3px}
"""

INDEX = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>spray audit: {{ run.name }}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{{ style }}</style></head>
<body>
<h1>spray audit: {{ run.name }}</h1>
<p class="muted">{{ run.samples }} samples in {{ run.classes|length }} classes; model accuracy on them
{{ "%.1f"|format(100 * run.accuracy) }}%; composite <code>{{ run.composite }}</code>; generated {{ run.created }}.</p>
<h2>Suspicious clusters, most suspicious first</h2>
{% if flagged %}
<table><colgroup><col style="width:4%"><col style="width:12%"><col style="width:8%"><col style="width:8%">
<col style="width:10%"><col style="width:58%"></colgroup>
<tr><th>#</th><th>class</th><th>cluster</th><th>size</th><th>score / flip rate</th><th>why</th></tr>
{% for f in flagged %}
<tr class="flagged"><td>{{ loop.index }}</td><td><a href="{{ f.href }}">{{ f.class_name }}</a></td>
<td>{{ f.cluster }}</td><td>{{ f.size }} ({{ "%.0f"|format(100 * f.share) }}%)</td>
<td>{{ "%.2f"|format(f.score) }}<br>{{ f.flip_text }}</td><td>{{ f.reason }}{% if f.flip_note %} <b>{{ f.flip_note }}</b>{% endif %}</td></tr>
{% endfor %}</table>
{% else %}<p class="ok">No cluster in any class reached the suspicion threshold ({{ "%.2f"|format(run.threshold) }}).</p>{% endif %}
<h2>Classes</h2>
<table><colgroup><col style="width:22%"><col style="width:10%"><col style="width:10%"><col style="width:14%">
<col style="width:14%"><col style="width:30%"></colgroup>
<tr><th>class</th><th>n</th><th>k</th><th>eigengap</th><th>accuracy</th><th>flagged clusters</th></tr>
{% for c in classes %}
<tr{% if c.flagged %} class="flagged"{% endif %}><td><a href="{{ c.href }}">{{ c.name }}</a></td><td>{{ c.n }}</td><td>{{ c.k }}</td>
<td>{{ "%.2f"|format(c.gap) }} (runner-up k={{ c.runner_up }})</td><td>{{ "%.1f"|format(100 * c.accuracy) }}%</td>
<td>{% if c.flagged %}<span class="flag">{{ c.flagged|join(", ") }}</span>{% else %}<span class="ok">none</span>{% endif %}</td></tr>
{% endfor %}</table>
{% if skipped %}<p class="muted">Not analysed: {% for s in skipped %}class {{ s.label }} ({{ s.reason }}){% if not loop.last %}, {% endif %}{% endfor %}.</p>{% endif %}
<p class="muted">Machine-readable: <a href="summary.json">summary.json</a>. Store: <code>{{ run.store }}</code>.</p>
</body></html>
"""

CLASS = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>spray: class {{ c.name }}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{{ style }}</style></head>
<body>
<p><a href="../index.html">&larr; all classes</a></p>
<h1>Class {{ c.name }} <span class="muted">(label {{ c.label }})</span></h1>
<p>{{ c.n }} samples, model accuracy {{ "%.1f"|format(100 * c.accuracy) }}%. The eigengap picks <b>k = {{ c.k }}</b>
strategies (relative gap {{ "%.2f"|format(c.gap) }}; runner-up k = {{ c.runner_up }}, gap {{ "%.2f"|format(c.runner_up_gap) }});
the kNN graph has {{ c.components }} connected component(s).
{% if c.flagged %}<span class="flag">Flagged: cluster {{ c.flagged|join(", ") }}.</span>{% else %}<span class="ok">No cluster flagged.</span>{% endif %}</p>
<div class="figs">
<figure><img src="{{ c.figures.spectrum }}" alt="eigenvalue spectrum"><figcaption>Smallest eigenvalues of the normalised Laplacian; the shaded gap chose k.</figcaption></figure>
<figure><img src="{{ c.figures.scatter }}" alt="2-D embedding"><figcaption>{{ c.scatter_caption }}</figcaption></figure>
</div>
<h2>Prototypes</h2>
<figure><img src="{{ c.figures.prototypes }}" alt="prototype heatmaps"><figcaption>Aggregated LRP (mean of per-sample normalised heatmaps; red positive, blue negative) of the whole class, then of each cluster; boxes: each cluster's hot spot (solid red: flagged).</figcaption></figure>
<h2>Clusters</h2>
{% for cl in c.clusters %}
<div class="card{% if cl.flagged %} flagged{% endif %}">
<b>Cluster {{ cl.cluster }}</b>: {{ cl.size }} samples ({{ "%.0f"|format(100 * cl.share) }}% of the class);
suspicion {{ "%.2f"|format(cl.score) }} {% if cl.flagged %}<span class="flag">flagged</span>{% else %}<span class="ok">not flagged</span>{% endif %};
hot spot {{ cl.box }} at {{ cl.where }}{% if cl.flip_text %}; artifact insertion: {{ cl.flip_text }}{% endif %}.
<br>{{ cl.reason }}{% if cl.flip_note %} <b>{{ cl.flip_note }}</b>{% endif %}
<figure><img src="{{ cl.figure }}" alt="examples of cluster {{ cl.cluster }}"><figcaption>Examples (medoids first): image, and LRP overlay.</figcaption></figure>
</div>
{% endfor %}
<p class="muted">Machine-readable: <a href="clusters.csv">clusters.csv</a>, <a href="summary.json">summary.json</a>.</p>
</body></html>
"""
