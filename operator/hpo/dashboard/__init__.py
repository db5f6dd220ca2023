"""``hpo dashboard``: a read-only web dashboard over the studies of a folder or a bucket.

- ``source``: studies through the results API (``hpo.results``), cached by revision;
- ``views``: the JSON each page draws, built from the API's frames (pure pandas);
- ``app``: the Starlette app (pages, JSON, artifact downloads, Plotly.js served locally);
- ``templates/`` and ``static/``: the pages; the browser draws them from the JSON and
  polls it, so a running study advances on screen without a reload.
"""
