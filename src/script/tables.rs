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
    /// The rows whose key is a phone number, by its digits (`+33 6 12…` → `33612…`): a key
    /// written another way finds them when no key is equal.
    by_phone: HashMap<String, usize>,
    /// Per row, the digits of its phone columns ([`phone_column`]) that hold a phone number.
    row_phones: Vec<HashMap<String, String>>,
}

/// Two rows with one key: the second can never be found by `lookup(table, key)`.
#[derive(Debug, PartialEq, Eq)]
struct Duplicate {
    /// Row indices, first < again.
    first: usize,
    again: usize,
    /// The keys as written.
    first_key: String,
    again_key: String,
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

/// A column compared as phone numbers in `lookup(table, #{column: …})`: its name holds
/// `phone`, `mobile`, `whatsapp` or `wa_id`, or is `tel` (any case).
pub fn phone_column(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["phone", "mobile", "whatsapp", "wa_id"]
        .iter()
        .any(|p| n.contains(p))
        || n == "tel"
}

/// The digits of `v` if it reads as a phone number (a table's cells are compared by them).
fn phone_of(v: &Value) -> Option<String> {
    let t = text(v);
    crate::domain::phone::looks_like_phone(&t)
        .then(|| crate::domain::phone::phone_digits(&t).ok())
        .flatten()
}

impl Table {
    /// Builds a table from rows, keyed by `key_field` (or the first field of the first row).
    pub fn from_rows(rows: Vec<Map<String, Value>>, key_field: Option<&str>) -> Table {
        Self::keyed(rows, key_field).0
    }

    /// The table, and its first two rows with one key (equal, or one phone number).
    fn keyed(rows: Vec<Map<String, Value>>, key_field: Option<&str>) -> (Table, Option<Duplicate>) {
        let key = key_field
            .map(str::to_string)
            .or_else(|| rows.first().and_then(|r| r.keys().next().cloned()));
        let keys = rows
            .iter()
            .map(|r| key.as_ref().and_then(|k| r.get(k)).map(text))
            .collect();
        Self::indexed(rows, keys)
    }

    /// Indexes `rows` by `keys` (one per row) once, at load.
    fn indexed(
        rows: Vec<Map<String, Value>>,
        keys: Vec<Option<String>>,
    ) -> (Table, Option<Duplicate>) {
        let mut by_key = HashMap::new();
        let mut by_phone: HashMap<String, usize> = HashMap::new();
        let mut dup = None;
        for (i, k) in keys.iter().enumerate() {
            let Some(k) = k else { continue };
            let first = match by_key.get(k) {
                Some(&f) => Some(f),
                None => {
                    by_key.insert(k.clone(), i);
                    None
                }
            };
            let first = first.or_else(|| {
                let digits = phone_of(&Value::String(k.clone()))?;
                match by_phone.get(&digits) {
                    Some(&f) => Some(f),
                    None => {
                        by_phone.insert(digits, i);
                        None
                    }
                }
            });
            if let (Some(f), None) = (first, &dup) {
                dup = Some(Duplicate {
                    first: f,
                    again: i,
                    first_key: keys[f].clone().unwrap_or_default(),
                    again_key: k.clone(),
                });
            }
        }
        let row_phones = rows
            .iter()
            .map(|r| {
                r.iter()
                    .filter(|(c, _)| phone_column(c))
                    .filter_map(|(c, v)| Some((c.clone(), phone_of(v)?)))
                    .collect()
            })
            .collect();
        let t = Table {
            rows,
            by_key,
            by_phone,
            row_phones,
        };
        (t, dup)
    }

    /// The row whose key is `key`; else, when `key` is a phone number, the row whose key is
    /// the same number written another way (`0033 6 12…` finds `+33 6 12…`).
    pub fn get(&self, key: &str) -> Option<&Map<String, Value>> {
        let i = self.by_key.get(key).copied().or_else(|| {
            let digits = phone_of(&Value::String(key.to_string()))?;
            self.by_phone.get(&digits).copied()
        })?;
        Some(&self.rows[i])
    }

    /// Every row matching all fields of `query`. A phone column ([`phone_column`]) matches
    /// the same phone number written another way.
    pub fn find(&self, query: &Map<String, Value>) -> Vec<&Map<String, Value>> {
        let phones: HashMap<&str, String> = query
            .iter()
            .filter(|(k, _)| phone_column(k))
            .filter_map(|(k, v)| Some((k.as_str(), phone_of(v)?)))
            .collect();
        self.rows
            .iter()
            .enumerate()
            .filter(|(i, r)| {
                query.iter().all(|(k, v)| {
                    r.get(k).is_some_and(|c| same(c, v))
                        || phones
                            .get(k.as_str())
                            .is_some_and(|d| self.row_phones[*i].get(k).is_some_and(|cd| cd == d))
                })
            })
            .map(|(_, r)| r)
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
            let src = String::from_utf8_lossy(&bytes);
            if let Ok(TopKeys(keys)) = serde_json::from_slice(&bytes) {
                repeated_key(&keys, &src)?;
            }
            from_value(v, &src)
        }
        "yaml" | "yml" => {
            let v: Value = serde_yaml::from_slice(&bytes).map_err(|e| {
                let (line, col) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
                err(without_place(e.to_string()), line, col)
            })?;
            let src = String::from_utf8_lossy(&bytes);
            if let Ok(TopKeys(keys)) = serde_yaml::from_slice(&bytes) {
                repeated_key(&keys, &src)?;
            }
            from_value(v, &src)
        }
        other => Err(err(
            format!("tables are .csv, .yaml or .json files, not .{other}"),
            0,
            0,
        )),
    }
}

/// The delimiter of a CSV file: `;` when its header row has `;` and no `,` (what a French or
/// German spreadsheet saves as "CSV"), else `,`.
fn delimiter(bytes: &[u8]) -> u8 {
    let header = bytes.split(|b| *b == b'\n').next().unwrap_or(b"");
    if header.contains(&b';') && !header.contains(&b',') {
        b';'
    } else {
        b','
    }
}

fn load_csv(bytes: &[u8]) -> Result<Table, TableError> {
    let mut rd = csv::ReaderBuilder::new()
        .delimiter(delimiter(bytes))
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
    let text = String::from_utf8_lossy(bytes);
    let mut rows = Vec::new();
    let mut lines = Vec::new();
    for rec in rd.records() {
        let rec = rec.map_err(|e| TableError {
            line: e.position().map(|p| p.line() as usize).unwrap_or(0),
            col: 0,
            message: e.to_string(),
        })?;
        lines.push(rec.position().map_or(0, |p| {
            crate::domain::book::line_at(&text, p.byte() as usize)
        }));
        let row: Map<String, Value> = headers
            .iter()
            .zip(rec.iter())
            .map(|(h, v)| (h.to_string(), Value::String(v.to_string())))
            .collect();
        rows.push(row);
    }
    match Table::keyed(rows, None) {
        (t, None) => Ok(t),
        (_, Some(d)) => Err(duplicate(&d, lines[d.first], lines[d.again])),
    }
}

/// The error of a duplicate key, shown at the second row.
fn duplicate(d: &Duplicate, first_line: usize, again_line: usize) -> TableError {
    let first = if first_line > 0 {
        format!("line {first_line}")
    } else {
        format!("row {}", d.first + 1)
    };
    let message = if d.first_key == d.again_key {
        format!(
            "the key `{}` is here and on {first} too: each row needs its own key (lookup finds only the first)",
            d.again_key
        )
    } else {
        format!(
            "the key `{}` is the phone number `{}` on {first} written another way: each row needs its own key (lookup finds only the first)",
            d.again_key, d.first_key
        )
    };
    TableError {
        message,
        line: again_line,
        col: 0,
    }
}

/// The 1-based line, after line `after`, of the first line of `text` holding `value` (and
/// `field`, when given): where a YAML or JSON row with that key was written. 0 if none.
fn line_of(text: &str, field: Option<&str>, value: &str, after: usize) -> usize {
    text.lines()
        .enumerate()
        .skip(after)
        .find(|(_, l)| match field {
            Some(f) => l.contains(value) && l.contains(f),
            // A map key starts its line: `key:`, `"key":`, `'key':`.
            None => {
                let l = l.trim_start();
                [
                    format!("{value}:"),
                    format!("\"{value}\""),
                    format!("'{value}'"),
                ]
                .iter()
                .any(|p| l.starts_with(p.as_str()))
            }
        })
        .map_or(0, |(i, _)| i + 1)
}

/// The keys of a top-level map, in file order, repeats kept (the parsers keep only the last
/// of a repeated key, silently); nothing for any other shape.
struct TopKeys(Vec<String>);

impl<'de> serde::Deserialize<'de> for TopKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = TopKeys;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a table")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<TopKeys, A::Error> {
                let mut keys = Vec::new();
                while let Some(k) = m.next_key::<Value>()? {
                    m.next_value::<serde::de::IgnoredAny>()?;
                    keys.push(text(&k));
                }
                Ok(TopKeys(keys))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut s: A,
            ) -> Result<TopKeys, A::Error> {
                while s.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(TopKeys(Vec::new()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A key written twice in a top-level map (`keys` in file order): its two lines.
fn repeated_key(keys: &[String], src: &str) -> Result<(), TableError> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, k) in keys.iter().enumerate() {
        if let Some(&f) = seen.get(k.as_str()) {
            let d = Duplicate {
                first: f,
                again: i,
                first_key: k.clone(),
                again_key: k.clone(),
            };
            let first = line_of(src, None, k, 0);
            return Err(duplicate(&d, first, line_of(src, None, k, first)));
        }
        seen.insert(k, i);
    }
    Ok(())
}

fn from_value(v: Value, src: &str) -> Result<Table, TableError> {
    let bad = |m: &str| TableError {
        message: m.to_string(),
        line: 0,
        col: 0,
    };
    let (t, field, dup) = match v {
        Value::Array(items) => {
            let rows = items
                .into_iter()
                .map(|i| match i {
                    Value::Object(m) => Ok(m),
                    _ => Err(bad("a table list must hold maps (rows)")),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let field = rows.first().and_then(|r| r.keys().next().cloned());
            let (t, dup) = Table::keyed(rows, None);
            (t, field, dup)
        }
        Value::Object(m) => {
            // key → row: the key is kept in the row as `key` unless the row has one.
            let (keys, rows): (Vec<_>, Vec<_>) = m
                .into_iter()
                .map(|(k, v)| match v {
                    Value::Object(mut row) => {
                        row.entry("key").or_insert_with(|| Value::String(k.clone()));
                        (Some(k), row)
                    }
                    other => {
                        let mut row = Map::new();
                        row.insert("key".into(), Value::String(k.clone()));
                        row.insert("value".into(), other);
                        (Some(k), row)
                    }
                })
                .unzip();
            let (t, dup) = Table::indexed(rows, keys);
            (t, None, dup)
        }
        _ => return Err(bad("a table is a list of rows or a map of key → row")),
    };
    match dup {
        None => Ok(t),
        Some(d) => {
            let first = line_of(src, field.as_deref(), &d.first_key, 0);
            let again = line_of(src, field.as_deref(), &d.again_key, first);
            Err(duplicate(&d, first, again))
        }
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
    fn a_phone_key_finds_its_row_written_any_way() {
        let (_d, p) = write(
            "p.csv",
            "phone,name\n+33 6 12 34 56 78,Claire\n0033611111111,Marc\n33622222222,Ann\n7,room\n",
        );
        let t = load(&p).unwrap();
        for k in [
            "33612345678",
            "+33612345678",
            "0033612345678",
            "+33 (0)6 12 34 56 78",
        ] {
            assert_eq!(t.get(k).unwrap()["name"], "Claire", "{k}");
        }
        assert_eq!(t.get("+33611111111").unwrap()["name"], "Marc");
        assert_eq!(t.get("33611111111").unwrap()["name"], "Marc");
        assert_eq!(t.get("+33 6 22 22 22 22").unwrap()["name"], "Ann");
        assert!(
            t.get("06 12 34 56 78").is_none(),
            "a national number is no guess"
        );
        assert!(t.get("33699999999").is_none());
        assert_eq!(t.get("7").unwrap()["name"], "room");
        assert!(t.get("07").is_none());
        // Field queries on a phone column compare numbers; other columns text.
        let q = json!({"phone": "0033 6 12 34 56 78"});
        assert_eq!(t.find(q.as_object().unwrap()).len(), 1);
        let q = json!({"name": "claire"});
        assert!(t.find(q.as_object().unwrap()).is_empty());
        // An exact key wins over a phone match.
        let (_d, p) = write(
            "e.yaml",
            "- {k: '33612345678', v: digits}\n- {k: '+33 6 12 34 56 77', v: spaced}\n",
        );
        let t = load(&p).unwrap();
        assert_eq!(t.get("33612345678").unwrap()["v"], "digits");
        assert_eq!(t.get("+33612345677").unwrap()["v"], "spaced");
        let (_d, p) = write("m.json", r#"{"+33 6 12 34 56 78": {"name": "C"}, "x": 1}"#);
        assert_eq!(load(&p).unwrap().get("33612345678").unwrap()["name"], "C");
        let (_d, p) = write("n.yaml", "- {name: A, mobile: 33612345678}\n");
        let q = json!({"mobile": "+33 6 12 34 56 78"});
        assert_eq!(load(&p).unwrap().find(q.as_object().unwrap()).len(), 1);
    }

    #[test]
    fn a_semicolon_csv_is_read_with_semicolons() {
        let (_d, p) = write(
            "p.csv",
            "phone;name;language\n+33 6 12 34 56 78;Claire Martin;fr\n",
        );
        let t = load(&p).unwrap();
        assert_eq!(t.get("33612345678").unwrap()["language"], "fr");
        // A comma file whose cells hold `;` stays a comma file.
        let (_d, p) = write("c.csv", "key,note\na,x;y\n");
        assert_eq!(load(&p).unwrap().get("a").unwrap()["note"], "x;y");
        assert_eq!(delimiter(b"a;b,c\n"), b',');
    }

    #[test]
    fn duplicate_keys_are_refused_at_both_lines() {
        let (_d, p) = write("p.csv", "phone,name\n33611,A\n\n33622,B\n33611,C\n");
        let e = load(&p).unwrap_err();
        assert_eq!(e.line, 5, "{e:?}");
        assert!(e.message.contains("`33611` is here and on line 2"), "{e:?}");
        let (_d, p) = write(
            "p.csv",
            "phone,name\n+33 6 12 34 56 78,A\n0033612345678,B\n",
        );
        let e = load(&p).unwrap_err();
        assert_eq!(e.line, 3, "{e:?}");
        assert!(
            e.message
                .contains("`0033612345678` is the phone number `+33 6 12 34 56 78` on line 2"),
            "{e:?}"
        );
        let (_d, p) = write(
            "r.yaml",
            "- id: a\n  q: 1\n- id: b\n  q: 2\n- id: a\n  q: 3\n",
        );
        let e = load(&p).unwrap_err();
        assert_eq!(e.line, 5, "{e:?}");
        assert!(e.message.contains("on line 1 too"), "{e:?}");
        let (_d, p) = write("r.json", "[\n {\"id\": 7},\n {\"id\": 7}\n]\n");
        let e = load(&p).unwrap_err();
        assert_eq!(e.line, 3, "{e:?}");
        let (_d, p) = write("m.yaml", "a: 1\nb: a\na: 3\n");
        let e = load(&p).unwrap_err();
        assert_eq!(e.line, 3, "{e:?}");
        assert!(e.message.contains("`a` is here and on line 1 too"), "{e:?}");
        let (_d, p) = write("m.json", "{\n \"a\": {\"n\": 1},\n \"a\": {\"n\": 2}\n}\n");
        assert_eq!(load(&p).unwrap_err().line, 3);
        let (_d, p) = write("m.json", "{\"+33 6 12 34 56 78\": 1, \"33612345678\": 2}");
        assert!(load(&p).unwrap_err().message.contains("phone number"));
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
