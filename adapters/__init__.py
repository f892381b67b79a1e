"""Per-agency adapters (Kemensos, Kemlu/KBRI, IOM): native records in and out of the gateway."""
