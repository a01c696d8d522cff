//! The values a run read with `state(key)`, kept so that its commit can find them unchanged.
//! Runs of different contacts go on in parallel and collect what they would write; a run
//! that read a value another run has since changed would write from a stale value (a count
//! raised by two contacts at once would go up by one). Its commit finds the change, writes
//! nothing, and the runs go again with the value as it is now.

use crate::script::{ExportRequest, ExportResult, Host};
use crate::store::StateRead;
use serde_json::{Map, Value};
use std::sync::{Arc, Mutex};

/// A project's host that remembers the last stored value of each key its runs read.
pub struct Recording {
    inner: Arc<dyn Host>,
    project: String,
    reads: Mutex<Vec<StateRead>>,
}

impl Recording {
    pub fn new(inner: Arc<dyn Host>, project: &str) -> Recording {
        Recording {
            inner,
            project: project.to_string(),
            reads: Mutex::new(Vec::new()),
        }
    }

    /// What the runs read so far, each key once (its last value); none are kept after.
    pub fn take(&self) -> Vec<StateRead> {
        std::mem::take(&mut *self.reads.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Host for Recording {
    fn state(&self, key: &str) -> Result<Option<Value>, String> {
        let value = self.inner.state(key)?;
        let mut reads = self.reads.lock().unwrap_or_else(|p| p.into_inner());
        // The last value seen is the one the run went on from (a run that waits for a value
        // to change has seen it change).
        match reads.iter_mut().find(|r| r.key == key) {
            Some(r) => r.value = value.clone(),
            None => reads.push(StateRead {
                project: self.project.clone(),
                key: key.to_string(),
                value: value.clone(),
            }),
        }
        Ok(value)
    }

    fn lookup(
        &self,
        table: &str,
        key: Option<&str>,
        query: Option<&Map<String, Value>>,
    ) -> Result<Vec<Value>, String> {
        self.inner.lookup(table, key, query)
    }

    fn last_inbound(&self, contact: &str) -> Result<Option<i64>, String> {
        self.inner.last_inbound(contact)
    }

    fn export(&self, req: &ExportRequest) -> Result<ExportResult, String> {
        self.inner.export(req)
    }
}
