//! Holder for the criterion benches in `benches/`; see `benches/README.md`.
