#![no_std]
//! Library target so the agent can declare a build dependency on this crate.
