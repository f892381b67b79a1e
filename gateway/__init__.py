"""Inter-agency exchange gateway for the protection of trafficking victims (Kemensos, Kemlu/KBRI, IOM).

Public modules: :mod:`gateway.sign` (make events), :mod:`gateway.verify` (check them),
:mod:`gateway.envelope` (CloudEvents codecs), :mod:`gateway.registry` (trust store),
:mod:`gateway.schemas` (message schemas), :mod:`gateway.seal` (HPKE sealed fields), :mod:`gateway.keys`,
:mod:`gateway.dsse`, :mod:`gateway.errors`.
"""

__version__ = "0.1.0"
