//! `ha-lock`: not built yet; see the issue that fills this crate.
