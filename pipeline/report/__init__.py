"""The report: the paper's Tables 1-6 beside this project's results, figures, and a static site (``reports/``).

``grar report`` (DVC stage ``report``) calls ``site.write_report(params)``.

Modules: ``runs`` (grid indexes and run folders: finished, failed, not run;
means over seeds), ``tables`` (Tables 1-6 as data, the grid-cell -> paper-row
mappings, Markdown), ``figures`` (training curves, confusion matrices,
qualitative examples, the class palette), ``qualitative`` (the runs and images
of the Figure-5-like examples), ``layout`` (where every file goes), ``site``
(pages from ``templates/``, atomic publication).

Output (relative to ``reports/``; ``layout.OUTPUTS``)
------------------------------------------------------
- ``index.html``: links to every table, dataset, grid and figure page.
- ``tables/table{1..6}.{html,md}``, ``tables/index.html``.
- ``datasets/<name>.html`` (class table, heatmaps, a filterable, sortable
  supporter/opponent table), ``datasets/<name>-explorer.html`` (the affinity
  explorer, self-contained: ``explorer``), ``datasets/index.html``.
- ``grids/<grid>.html`` (the cost plan of ``pipeline.cluster.plan``, cells, states,
  scores per seed, curves, λ and λ̂, learnt vs prior edges, confusion matrices),
  ``grids/logs/<run>/{error.txt,log.txt}`` (copies, so failed cells
  link inside the site), ``grids/index.html``.
- ``figures/``: ``stats/<name>/...`` (copied from ``artifacts/stats/<name>/``),
  ``curves/<grid>/<cell>.png``, ``lambdas/<grid>/<cell>.png``,
  ``edges/<run>.png``, ``confusion/<run>[_ms].svg``,
  ``qualitative/<dataset>.png``, ``qualitative.html``, ``index.html``.

Every link is relative, so the folder opens from the file system and from any
static server; nothing is loaded from the network (CSS and JavaScript inline).
"""
