//! One integration test binary of real parts: a temp home with a real SQLite file, the real
//! gate on 127.0.0.1:0, the fake Cloud API on 127.0.0.1:0, real HTTP between them.

mod common;

mod backup;
mod bench_smoke;
mod cli;
mod cli_edges;
mod cli_terminal;
mod config_history;
mod contacts;
mod diag_files;
mod durability;
mod engine;
mod export;
mod export_order;
mod fixtures;
mod groups;
mod http_edges;
mod http_labels;
mod ingest;
mod operate;
mod phones;
mod reload;
mod reload_imports;
mod restore;
mod robustness;
mod rules_cli;
mod sandbox;
mod sched_fixes;
mod scheduler;
mod script_api;
mod send;
mod send_cli;
mod serving;
mod shutdown;
mod simulator_mode;
mod skeleton;
mod slow_clients;
mod status_page;
mod trust;
mod tutorial;
mod users_rules;
