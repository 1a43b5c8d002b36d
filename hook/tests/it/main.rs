//! Integration tests of checkdef against real git repositories in temp dirs.
mod config;
mod faults;
mod plan;
mod prepush;
mod run;
mod support;
mod teammate;
