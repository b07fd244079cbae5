//! SQLite engine (to be written)
