//! Integration tests of checkdef against real git repositories in temp dirs.
mod config;
mod plan;
mod support;
