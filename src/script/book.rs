//! The contact book in scripts: `add_label(contact, label)` and `remove_label(contact,
//! label)`. Like `set_state`, they only record an action; the host commits it with the run's
//! other effects (a dry run prints it and commits nothing). `lookup("contacts", #{label: L})`
//! reads the labels already committed.

use super::api::err;
use super::{Action, FnResult, with_current};
use crate::domain::book::{contact_key_of, validate_label};
use rhai::{Engine, INT};

fn label(f: &str, contact: &str, label: &str, add: bool) -> FnResult<()> {
    let contact = match contact_key_of(contact) {
        Ok(c) => c,
        Err(e) => return err(format!("{f}: {e}")),
    };
    let label = match validate_label(label) {
        Ok(l) => l,
        Err(e) => return err(format!("{f}: {e}")),
    };
    with_current(|cur| {
        cur.actions.push(Action::Label {
            contact,
            label,
            add,
        });
        Ok(())
    })
}

pub(super) fn register(engine: &mut Engine) {
    engine.register_fn("add_label", |c: &str, l: &str| {
        label("add_label", c, l, true)
    });
    engine.register_fn("remove_label", |c: &str, l: &str| {
        label("remove_label", c, l, false)
    });
    engine.register_fn("add_label", |c: INT, l: &str| {
        label("add_label", &c.to_string(), l, true)
    });
    engine.register_fn("remove_label", |c: INT, l: &str| {
        label("remove_label", &c.to_string(), l, false)
    });
}
