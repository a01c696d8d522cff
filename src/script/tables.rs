//! A project's lookup tables: CSV with a header row, or YAML/JSON (a list of rows, or a map of
//! key → row), loaded when the project compiles and shared read-only by its runs. The key of
//! `lookup(table, key)` is a row's first column (CSV, list) or its map key.

use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::Path;

/// One loaded table.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Table {
    rows: Vec<Map<String, Value>>,
    by_key: HashMap<String, usize>,
}

/// How a cell compares with a looked-up value: equal JSON, or equal as text (so that `7` finds
/// a CSV cell `"7"` and a phone number written either way matches).
fn same(a: &Value, b: &Value) -> bool {
    a == b || text(a) == text(b)
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Table {
    /// Builds a table from rows, keyed by `key_field` (or the first field of the first row).
    pub fn from_rows(rows: Vec<Map<String, Value>>, key_field: Option<&str>) -> Table {
        let key = key_field
            .map(str::to_string)
            .or_else(|| rows.first().and_then(|r| r.keys().next().cloned()));
        let mut by_key = HashMap::new();
        if let Some(k) = key {
            for (i, r) in rows.iter().enumerate() {
                if let Some(v) = r.get(&k) {
                    by_key.entry(text(v)).or_insert(i);
                }
            }
        }
        Table { rows, by_key }
    }

    /// The row whose key is `key`.
    pub fn get(&self, key: &str) -> Option<&Map<String, Value>> {
        self.by_key.get(key).map(|&i| &self.rows[i])
    }

    /// Every row matching all fields of `query`.
    pub fn find(&self, query: &Map<String, Value>) -> Vec<&Map<String, Value>> {
        self.rows
            .iter()
            .filter(|r| {
                query
                    .iter()
                    .all(|(k, v)| r.get(k).is_some_and(|c| same(c, v)))
            })
            .collect()
    }

    /// Every row.
    pub fn rows(&self) -> &[Map<String, Value>] {
        &self.rows
    }
}

/// A table load error: a message and, where known, the 1-based line and column.
#[derive(Debug, PartialEq, Eq)]
pub struct TableError {
    pub message: String,
    /// 0 when unknown.
    pub line: usize,
    /// 0 when unknown (the error is then shown at the start of the line).
    pub col: usize,
}

/// Loads a table by its extension.
pub fn load(path: &Path) -> Result<Table, TableError> {
    let err = |message: String, line: usize, col: usize| TableError { message, line, col };
    // The parsers end their messages with the place, which the diagnostic shows on its own.
    let without_place = |mut m: String| {
        if let Some(i) = m.rfind(" at line ") {
            m.truncate(i);
        }
        m
    };
    let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read: {e}"), 0, 0))?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "csv" => load_csv(&bytes),
        "json" => {
            let v: Value = serde_json::from_slice(&bytes)
                .map_err(|e| err(without_place(e.to_string()), e.line(), e.column()))?;
            from_value(v)
        }
        "yaml" | "yml" => {
            let v: Value = serde_yaml::from_slice(&bytes).map_err(|e| {
                let (line, col) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
                err(without_place(e.to_string()), line, col)
            })?;
            from_value(v)
        }
        other => Err(err(
            format!("tables are .csv, .yaml or .json files, not .{other}"),
            0,
            0,
        )),
    }
}

fn load_csv(bytes: &[u8]) -> Result<Table, TableError> {
    let mut rd = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(bytes);
    let headers = rd
        .headers()
        .map_err(|e| TableError {
            message: e.to_string(),
            line: 1,
            col: 0,
        })?
        .clone();
    if headers.iter().any(str::is_empty) {
        return Err(TableError {
            message: "the header row has an empty column name".into(),
            line: 1,
            col: 0,
        });
    }
    let mut rows = Vec::new();
    for rec in rd.records() {
        let rec = rec.map_err(|e| TableError {
            line: e.position().map(|p| p.line() as usize).unwrap_or(0),
            col: 0,
            message: e.to_string(),
        })?;
        let row: Map<String, Value> = headers
            .iter()
            .zip(rec.iter())
            .map(|(h, v)| (h.to_string(), Value::String(v.to_string())))
            .collect();
        rows.push(row);
    }
    Ok(Table::from_rows(rows, None))
}

fn from_value(v: Value) -> Result<Table, TableError> {
    let bad = |m: &str| TableError {
        message: m.to_string(),
        line: 0,
        col: 0,
    };
    match v {
        Value::Array(items) => {
            let rows = items
                .into_iter()
                .map(|i| match i {
                    Value::Object(m) => Ok(m),
                    _ => Err(bad("a table list must hold maps (rows)")),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Table::from_rows(rows, None))
        }
        Value::Object(m) => {
            // key → row: the key is kept in the row as `key` unless the row has one.
            let rows = m
                .into_iter()
                .map(|(k, v)| match v {
                    Value::Object(mut row) => {
                        row.entry("key").or_insert_with(|| Value::String(k.clone()));
                        Ok((k, row))
                    }
                    other => {
                        let mut row = Map::new();
                        row.insert("key".into(), Value::String(k.clone()));
                        row.insert("value".into(), other);
                        Ok((k, row))
                    }
                })
                .collect::<Result<Vec<_>, TableError>>()?;
            let mut t = Table::from_rows(Vec::new(), None);
            for (i, (k, row)) in rows.into_iter().enumerate() {
                t.by_key.insert(k, i);
                t.rows.push(row);
            }
            Ok(t)
        }
        _ => Err(bad("a table is a list of rows or a map of key → row")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn write(name: &str, text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(name);
        std::fs::write(&p, text).unwrap();
        (d, p)
    }

    #[test]
    fn csv_rows_by_first_column_and_by_fields() {
        let (_d, p) = write(
            "p.csv",
            "phone,name,lang\n+33611,Ann,fr\n+33622, Bob ,en\n+33633,Cid,fr\n",
        );
        let t = load(&p).unwrap();
        assert_eq!(t.get("+33622").unwrap()["name"], "Bob");
        assert!(t.get("+1").is_none());
        let fr = t.find(json!({"lang": "fr"}).as_object().unwrap());
        assert_eq!(fr.len(), 2);
    }

    #[test]
    fn yaml_and_json_shapes() {
        let (_d, p) = write(
            "h.yaml",
            "paris:\n  hotel: Lutetia\n  nights: 3\nlyon: Mercure\n",
        );
        let t = load(&p).unwrap();
        assert_eq!(t.get("paris").unwrap()["nights"], 3);
        assert_eq!(t.get("lyon").unwrap()["value"], "Mercure");
        let (_d, p) = write("r.json", r#"[{"id": 7, "q": "x"}, {"id": 8, "q": "y"}]"#);
        let t = load(&p).unwrap();
        assert_eq!(t.get("8").unwrap()["q"], "y");
        assert_eq!(t.find(json!({"id": "7"}).as_object().unwrap()).len(), 1);
    }

    #[test]
    fn errors_have_lines() {
        let (_d, p) = write("bad.csv", "a,b\n1,2\n3,4,5\n");
        let e = load(&p).unwrap_err();
        assert_eq!(e.line, 3, "{e:?}");
        let (_d, p) = write("bad.yaml", "a: [1,\n");
        assert!(load(&p).unwrap_err().line > 0);
        // JSON: the place the parser names, not in the message too.
        let (_d, p) = write("bad.json", "[\n  {\"id\": 1},\n  {\"id\" 2}\n]\n");
        let e = load(&p).unwrap_err();
        assert_eq!((e.line, e.col), (3, 9), "{e:?}");
        assert_eq!(e.message, "expected `:`");
        let (_d, p) = write("t.txt", "x");
        assert!(
            load(&p)
                .unwrap_err()
                .message
                .contains(".csv, .yaml or .json")
        );
    }
}
