"""Providers: one worker process per provider (DESIGN §1). ``base`` holds the connection loop
every venue shares; each venue's part (symbology, subscriptions, codec, books) is
``dm/venues/<venue>/provider.py``, found with ``base.provider_class(kind)``.

Workers that are not a venue package (no websocket codec, symbology or replay handler) are listed
in ``WORKERS`` below: kind → ``"module:Class"``, with the defaults their config section takes in
``DEFAULTS`` (``exchange`` from a key of the section, ``publisher_id``)."""

#: provider kind → worker class of a provider that is not a venue (``dm/venues``)
WORKERS: dict[str, str] = {
    "databento": "dm.databento.live:DatabentoLiveProvider",
}

#: kind → (config key whose value is the default exchange, default publisher_id). Databento: the
#: dataset (``GLBX.MDP3``) is the exchange instruments register under (as ``[routing]`` and the
#: historical engine use it); records keep Databento's own publisher ids (1-999), the provider's
#: (gap records) is 0 unless configured.
DEFAULTS: dict[str, tuple[str, int]] = {
    "databento": ("dataset", 0),
}

#: kind → ``"module:function(name, extra)"`` validating the provider's own keys when the config is
#: loaded (raises ``ConfigError`` naming the key), so a typo stops ``dm supervise`` before anything
#: starts. Kept light: the function's module must not import the worker.
SETTINGS: dict[str, str] = {
    "databento": "dm.databento.config:parse_live_settings",
}
