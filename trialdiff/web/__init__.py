"""The web view: a Datasette plugin, its metadata, a page per study and its SVG timeline.

Datasette is an optional extra (`pip install 'trialdiff[web]'`); only `app`, `plugin` and
`study` import it, and only `trialdiff serve` imports them.
"""
