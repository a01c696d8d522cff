//! One integration test binary of real parts: a temp home with a real SQLite file, the real
//! gate on 127.0.0.1:0, the fake Cloud API on 127.0.0.1:0, real HTTP between them.

mod common;

mod backup;
mod cli;
mod config_history;
mod durability;
mod engine;
mod export;
mod fixtures;
mod ingest;
mod reload;
mod robustness;
mod rules_cli;
mod scheduler;
mod send;
mod skeleton;
