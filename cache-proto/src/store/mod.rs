//! placeholder
pub struct Fetched;
pub struct FileStore;
pub struct HttpConfig;
pub struct HttpStore;
pub enum PublishOutcome {}
pub enum Store {}
pub struct StoreError;
pub enum Trust {}
