"""Questions about the evidence log: which records match a filter.

:mod:`agent.query.filter` holds the one definition of a query's filter; the
parsers, the predicate, the index and the renderers all take it.
"""
