"""Databento: the historical engine (``historical``), the fake gateways users can test against
(``fake``) and the ``[databento]`` settings (``config``). DBN → dm records is ``dm.dbn``.

Wire facts were checked against the official client ``databento`` 0.88 (PyPI), which dm uses for
every historical call (``timeseries.get_range``, ``metadata.get_cost`` / ``get_billable_size`` /
``get_record_count`` / ``get_dataset_range``, ``symbology.resolve``).
"""
