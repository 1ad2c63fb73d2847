//! sextant-corefile: placeholder, filled in by its owner.
