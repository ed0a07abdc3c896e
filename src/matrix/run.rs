//! The host side of the matrix (placeholder, filled below).
