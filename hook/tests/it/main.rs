//! Integration tests of checkdef against real git repositories in temp dirs.
mod config;
mod faults;
mod plan;
mod support;
