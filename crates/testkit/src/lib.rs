//! sextant-testkit: placeholder, filled in by its owner.
