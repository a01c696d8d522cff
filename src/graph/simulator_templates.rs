//! The templates the fake Cloud API knows, as if approved in WhatsApp Manager: each with its
//! languages and its number of body parameters. A simulator told none (the tests' own) takes
//! any template; one told some answers a template send as Graph does (shared/reference §5):
//! an unknown name, or a language the template does not have, is error 132001 ("template name
//! does not exist in the translation"), a wrong number of body parameters 132000 ("number of
//! parameters does not match"). The built-in simulator (`graph.base_url: simulator`) learns
//! them from `simulator-templates.yaml` beside gate.yaml, if there is one (the demo has).

use super::{Simulator, lock};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The file, beside gate.yaml, that declares the built-in simulator's templates.
pub const TEMPLATES_FILE: &str = "simulator-templates.yaml";

/// One known template.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimTemplate {
    /// Language codes it was approved in (`en`, `fr`, `en_US`, …).
    pub languages: Vec<String>,
    /// How many body parameters it takes.
    #[serde(default)]
    pub params: usize,
}

impl Simulator {
    /// From now on, templates are checked against the known ones: adds `name` in `languages`
    /// with `params` body parameters.
    pub fn add_template(&self, name: &str, languages: &[&str], params: usize) {
        lock(&self.inner.templates).get_or_insert_default().insert(
            name.to_string(),
            SimTemplate {
                languages: languages.iter().map(|l| l.to_string()).collect(),
                params,
            },
        );
    }

    /// Reads `path` (`name: { languages: [..], params: N }` per template) if it exists: the
    /// number of templates now known, `Ok(None)` without a file (templates stay unchecked).
    /// An error names the file, line and column.
    pub fn load_templates(&self, path: &Path) -> Result<Option<usize>, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let parsed: Option<BTreeMap<String, SimTemplate>> =
            serde_yaml::from_str(&text).map_err(|e| match e.location() {
                Some(l) => format!("{}:{}:{}: {e}", path.display(), l.line(), l.column()),
                None => format!("{}: {e}", path.display()),
            })?;
        let parsed = parsed.unwrap_or_default();
        let n = parsed.len();
        let mut known = lock(&self.inner.templates);
        let known = known.get_or_insert_default();
        known.extend(parsed);
        Ok(Some(n))
    }
}

/// The templates a simulator knows; `None`: every template is taken.
pub(super) type Templates = Option<HashMap<String, SimTemplate>>;

/// Graph's answer to a template message the simulator does not know as sent: its error code
/// and message, or `None` to accept it.
pub(super) fn refuse_template(sim: &Simulator, body: &Value) -> Option<(i64, String)> {
    if body.get("type").and_then(Value::as_str) != Some("template") {
        return None;
    }
    let known = lock(&sim.inner.templates);
    let known = known.as_ref()?;
    let t = body.get("template")?;
    let name = t.get("name").and_then(Value::as_str).unwrap_or("");
    let language = t
        .pointer("/language/code")
        .and_then(Value::as_str)
        .unwrap_or("");
    let Some(spec) = known
        .get(name)
        .filter(|s| s.languages.iter().any(|l| l == language))
    else {
        return Some((
            132001,
            format!(
                "(#132001) Template name does not exist in the translation: template name ({name}) does not exist in {language}"
            ),
        ));
    };
    let given: usize = t
        .get("components")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| {
            c.get("type")
                .and_then(Value::as_str)
                .is_some_and(|k| k.eq_ignore_ascii_case("body"))
        })
        .map(|c| {
            c.get("parameters")
                .and_then(Value::as_array)
                .map_or(0, Vec::len)
        })
        .sum();
    (given != spec.params).then(|| {
        (
            132000,
            format!(
                "(#132000) Number of parameters does not match the expected number of params: body: number of localizable_params ({given}) does not match the expected number of params ({})",
                spec.params
            ),
        )
    })
}
