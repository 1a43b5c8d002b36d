//! Integration tests of checkdef against real git repositories in temp dirs.
mod concurrency;
mod config;
mod environment;
mod explain;
mod faults;
mod init;
mod plan;
mod prepush;
mod pytest_files;
mod reports;
mod run;
mod s3;
mod status;
mod support;
mod teammate;
mod uploads;
mod usability;
