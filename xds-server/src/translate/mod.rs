//! PURE translation: `model::Gateway` -> Envoy resources. No I/O, no clock, no randomness.
