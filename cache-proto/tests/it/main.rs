//! Integration tests of cache-proto: reference vectors, hostile NARs, property tests, and the
//! file and HTTP stores (the latter against an in-test HTTP/1.1 server on 127.0.0.1).

mod common;
mod file_store;
mod http_server;
mod http_store;
mod nar_hostile;
mod nar_unpack;
mod props;
mod vectors;
