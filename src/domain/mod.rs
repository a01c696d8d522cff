//! Pure domain types shared by every layer: ids, secrets, events and outgoing messages.
//! Nothing here does I/O.

pub mod book;
pub mod event;
pub mod groups;
pub mod ids;
pub mod local_file;
pub mod outgoing;
pub mod phone;
pub mod schedule;
pub mod secret;
pub mod window;

pub use event::{Event, EventKind};
pub use ids::UserId;
pub use secret::Secret;
