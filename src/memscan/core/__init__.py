"""Scans and their results: ``scanner`` (``scan()``), the exact tier's
arithmetic (``exact``), ``Snapshot``, the ``Sampler``, and the psutil tier
(``fallback``)."""
