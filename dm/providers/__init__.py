"""Venue providers: one worker process per provider (DESIGN §1). ``base`` holds the connection
loop every venue shares; each venue's part (symbology, subscriptions, codec, books) is
``dm/venues/<venue>/provider.py``, found with ``base.provider_class(kind)``."""
