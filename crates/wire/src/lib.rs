//! sextant-wire: placeholder, filled in by its owner.
