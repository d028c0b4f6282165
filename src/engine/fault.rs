//! Fault-injecting storage for tests.
