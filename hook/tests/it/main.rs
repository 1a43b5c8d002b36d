//! Integration tests of checkdef against real git repositories in temp dirs.
mod concurrency;
mod config;
mod explain;
mod faults;
mod init;
mod plan;
mod prepush;
mod reports;
mod run;
mod secrets;
mod status;
mod support;
mod teammate;
mod trust;
