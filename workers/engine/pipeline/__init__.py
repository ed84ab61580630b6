"""The stages of :func:`workers.engine.find_fixed_points`, one module each.

:mod:`.run` settles the options, device and model; :mod:`.inputs` checks each request's
arrays; :mod:`.chunking` solves them in memory-sized chunks; :mod:`.selection` keeps one
sample per distinct root, polishes it and screens outliers; :mod:`.completion` adds the
midpoint restarts and the float64 refinement; :mod:`.assembly` linearises the points into a
FixedPoints; :mod:`.info` records the search as a :class:`~.info.SearchInfo`;
:mod:`.reporting` turns solver hooks into progress reports and the time limit.
"""
