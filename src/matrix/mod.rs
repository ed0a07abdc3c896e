//! The conformance and breakout matrix: check definitions, the host-side runner,
//! and reports (table, JSON, JUnit XML).
