//! The folder-sync client end to end: the real binary on real folders against a real
//! server on port 0.

mod basics;
mod crash;
mod failures;
mod harness;
mod random;
mod safety;
mod watch;
