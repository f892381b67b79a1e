"""Inter-agency exchange gateway for the protection of trafficking victims (Kemensos, Kemlu/KBRI, IOM).

Public modules: :mod:`gateway.contract.sign` (make events), :mod:`gateway.contract.verify` (check them),
:mod:`gateway.contract.envelope` (CloudEvents codecs), :mod:`gateway.contract.registry` (trust store),
:mod:`gateway.contract.schemas` (message schemas), :mod:`gateway.contract.seal` (HPKE sealed fields),
:mod:`gateway.contract.keys`,
:mod:`gateway.contract.dsse`, :mod:`gateway.errors`.
"""

__version__ = "0.1.0"
