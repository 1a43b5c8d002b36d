//! Integration tests of the installer against real git repositories in temp dirs.
#![cfg(unix)]

mod chain;
mod install;
mod locate;
mod managers;
mod support;
