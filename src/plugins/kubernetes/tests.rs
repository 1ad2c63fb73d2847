//! Unit tests of the kubernetes answer logic over in-memory data.
