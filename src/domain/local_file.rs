//! Sending a local file: the `#{file: "program.pdf", caption, filename, as}` send form. The
//! script names a file of its project folder (the CLI: any readable path); the message type
//! comes from the extension (or `as`). The body carries a `wagate_file` marker instead of a
//! media id; right before the call the sender uploads the file (multipart, once per content:
//! a bulk send uploads it once) and puts the media id in its place.

use serde_json::{Map, Value, json};
use std::path::{Component, Path};

/// The key under the media object that names the file until it is uploaded.
pub const MARKER: &str = "wagate_file";

/// (extension, message type, MIME type). Sizes: [`max_bytes`]. From shared/reference §2.
const TYPES: &[(&str, &str, &str)] = &[
    ("jpg", "image", "image/jpeg"),
    ("jpeg", "image", "image/jpeg"),
    ("png", "image", "image/png"),
    ("webp", "sticker", "image/webp"),
    ("mp4", "video", "video/mp4"),
    ("3gp", "video", "video/3gpp"),
    ("aac", "audio", "audio/aac"),
    ("amr", "audio", "audio/amr"),
    ("mp3", "audio", "audio/mpeg"),
    ("m4a", "audio", "audio/mp4"),
    ("ogg", "audio", "audio/ogg"),
    ("opus", "audio", "audio/ogg"),
    ("pdf", "document", "application/pdf"),
    ("txt", "document", "text/plain"),
    ("doc", "document", "application/msword"),
    (
        "docx",
        "document",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ),
    ("xls", "document", "application/vnd.ms-excel"),
    (
        "xlsx",
        "document",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ),
    ("ppt", "document", "application/vnd.ms-powerpoint"),
    (
        "pptx",
        "document",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ),
];

/// The largest file WhatsApp takes for a message type (shared/reference §2).
pub fn max_bytes(kind: &str) -> u64 {
    match kind {
        "image" => 5 << 20,
        "sticker" => 500 << 10,
        "video" | "audio" => 16 << 20,
        _ => 100 << 20,
    }
}

/// Builds the media object of a `#{file: …}` send; returns the message type and the object.
pub fn file_form(m: &Map<String, Value>) -> Result<(String, Value), String> {
    if let Some(k) = m
        .keys()
        .find(|k| !["file", "caption", "filename", "as"].contains(&k.as_str()))
    {
        return Err(format!(
            "send: a file message does not take `{k}`; it takes file, caption, filename, as"
        ));
    }
    let path = match m.get("file") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        _ => return Err("send: `file` must be the path of a file, e.g. \"program.pdf\"".into()),
    };
    let ext = Path::new(&path)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let known: Vec<&str> = TYPES.iter().map(|t| t.0).collect();
    let Some(&(_, kind, mime)) = TYPES.iter().find(|t| t.0 == ext) else {
        return Err(format!(
            "send: `{path}`: WhatsApp cannot send a .{ext} file; it takes {}",
            known.join(", ")
        ));
    };
    let kind = match m.get("as") {
        None => kind,
        Some(Value::String(a)) if a == "document" => "document",
        Some(Value::String(a)) if a == kind => kind,
        Some(other) => {
            return Err(format!(
                "send: `as` may only be \"document\" (or \"{kind}\") for `{path}`, not {other}"
            ));
        }
    };
    let mut o = Map::new();
    if let Some(c) = m.get("caption") {
        if kind == "audio" || kind == "sticker" {
            return Err(format!("send: {kind} messages take no caption"));
        }
        o.insert("caption".into(), string(c, "caption")?.into());
    }
    if kind == "document" {
        let name = match m.get("filename") {
            Some(f) => string(f, "filename")?,
            None => Path::new(&path)
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("file")
                .to_string(),
        };
        o.insert("filename".into(), name.into());
    } else if m.contains_key("filename") {
        return Err(format!("send: only documents take `filename`, not {kind}"));
    }
    o.insert(MARKER.into(), json!({"path": path, "mime": mime}));
    Ok((kind.to_string(), Value::Object(o)))
}

fn string(v: &Value, what: &str) -> Result<String, String> {
    match v {
        Value::String(s) if !s.is_empty() => Ok(s.clone()),
        _ => Err(format!("send: `{what}` must be a non-empty text")),
    }
}

/// The marker of a body built by [`file_form`]: (message type, path, MIME type).
pub fn marker(body: &Value) -> Option<(String, String, String)> {
    let kind = body.get("type")?.as_str()?;
    let f = body.get(kind)?.get(MARKER)?;
    Some((
        kind.to_string(),
        f.get("path")?.as_str()?.to_string(),
        f.get("mime")?.as_str()?.to_string(),
    ))
}

/// Rewrites the marker's path (e.g. made absolute by the host).
pub fn set_path(body: &mut Value, path: &str) {
    if let Some((kind, _, _)) = marker(body) {
        body[kind.as_str()][MARKER]["path"] = path.into();
    }
}

/// Puts the uploaded media id in place of the marker: the body Graph gets.
pub fn set_media_id(body: &mut Value, media_id: &str) {
    if let Some((kind, _, _)) = marker(body)
        && let Some(o) = body[kind.as_str()].as_object_mut()
    {
        o.remove(MARKER);
        o.insert("id".into(), media_id.into());
    }
}

/// A path a script may name: relative, inside its folder (no `..`, no root).
pub fn is_inside(path: &str) -> bool {
    let p = Path::new(path);
    !path.is_empty()
        && p.components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(v: Value) -> Result<(String, Value), String> {
        file_form(v.as_object().unwrap())
    }

    #[test]
    fn the_type_comes_from_the_extension() {
        let (t, o) = form(json!({"file": "Programme.PDF", "caption": "Paris"})).unwrap();
        assert_eq!(t, "document");
        assert_eq!(o["filename"], "Programme.PDF");
        assert_eq!(o["caption"], "Paris");
        assert_eq!(o[MARKER]["mime"], "application/pdf");
        let (t, o) = form(json!({"file": "photos/eiffel.jpg"})).unwrap();
        assert_eq!(
            (t.as_str(), &o[MARKER]["mime"]),
            ("image", &json!("image/jpeg"))
        );
        assert_eq!(form(json!({"file": "a.webp"})).unwrap().0, "sticker");
        assert_eq!(form(json!({"file": "a.ogg"})).unwrap().0, "audio");
        assert_eq!(
            form(json!({"file": "a.mp4", "as": "document"})).unwrap().0,
            "document"
        );
    }

    #[test]
    fn bad_forms_say_what_is_wrong() {
        let e = form(json!({"file": "a.exe"})).unwrap_err();
        assert!(
            e.contains("cannot send a .exe file") && e.contains("pdf"),
            "{e}"
        );
        let e = form(json!({"file": "a.mp3", "caption": "x"})).unwrap_err();
        assert!(e.contains("audio messages take no caption"), "{e}");
        let e = form(json!({"file": "a.jpg", "filename": "x"})).unwrap_err();
        assert!(e.contains("only documents take `filename`"), "{e}");
        let e = form(json!({"file": "a.jpg", "as": "video"})).unwrap_err();
        assert!(e.contains("`as` may only be"), "{e}");
        let e = form(json!({"file": "a.pdf", "link": "x"})).unwrap_err();
        assert!(e.contains("does not take `link`"), "{e}");
    }

    #[test]
    fn the_marker_gives_way_to_the_media_id() {
        let (t, o) = form(json!({"file": "p.pdf"})).unwrap();
        let mut body =
            json!({"messaging_product": "whatsapp", "to": "+33611", "type": t, "document": o});
        assert_eq!(marker(&body).unwrap().1, "p.pdf");
        set_path(&mut body, "/abs/p.pdf");
        assert_eq!(marker(&body).unwrap().1, "/abs/p.pdf");
        set_media_id(&mut body, "4242");
        assert_eq!(body["document"], json!({"filename": "p.pdf", "id": "4242"}));
        assert!(marker(&body).is_none());
    }

    #[test]
    fn scripts_stay_inside_their_folder() {
        assert!(is_inside("program.pdf"));
        assert!(is_inside("docs/./program.pdf"));
        assert!(!is_inside("../olga-secrets/x.pdf"));
        assert!(!is_inside("/etc/passwd"));
        assert!(!is_inside(""));
    }
}
