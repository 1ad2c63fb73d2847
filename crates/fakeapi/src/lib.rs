//! sextant-fakeapi: placeholder, filled in by its owner.
