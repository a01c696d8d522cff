//! wagate: a self-hosted WhatsApp gate.
//!
//! ```text
//! Meta ──POST /webhook/whatsapp/{user}──▶ verify signature ──▶ store (committed) ──▶ 200
//!                                                   │
//!                                                   ▼
//!                                    dispatcher ──▶ matching rules (Rhai, sandboxed)
//!                                                   │  send / reply / log
//!                                                   ▼
//!                                   outbox (durable) ──▶ sender ──▶ Graph API (reqwest)
//! ```
//!
//! Stages never call each other: each commits its result to the [`store`] and wakes the next.
//! A module uses only its own layer or those above it: `domain` and `whatsapp` are pure;
//! `config`, `vault`, `store`, `graph`, `script` and `lock` (the home's liveness lock) each own
//! one external thing; `rules`, `dispatch` and `sender` are the flows; `http`, `app` and `cli`
//! are edges and wiring.
#![forbid(unsafe_code)]

pub mod domain;
pub mod whatsapp;

pub mod config;
pub mod graph;
pub mod lock;
pub mod script;
pub mod store;
pub mod tokens;
pub mod users;
pub mod vault;

pub mod backup;
pub mod dispatch;
pub mod export;
pub mod history;
pub mod media;
pub mod metrics;
pub mod private_file;
pub mod rules;
pub mod runner;
pub mod scheduler;
pub mod sender;
pub mod state_reads;
pub mod status;
pub mod terminal;
pub mod watcher;

pub mod app;
pub mod cli;
pub mod http;
