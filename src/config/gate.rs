//! Checks of gate.yaml's values that serde cannot make: an address the gate can listen on and
//! a Graph base URL it can call. What the gate does with them (binding, requests) is not here.

use super::GateFile;
use super::diag::{Diagnostic, locate_key};
use std::net::SocketAddr;
use std::path::Path;

/// The first problem of `file` (gate.yaml, whose text is `src`), located on its key.
pub(super) fn check(file: &GateFile, shown: &Path, src: &str) -> Result<(), Diagnostic> {
    let at = |key: &str, msg: String| match locate_key(src, key, 0).or_else(|| in_flow(src, key)) {
        Some((l, c)) => Diagnostic::at(shown, src, l, c, msg),
        None => Diagnostic::file(shown, msg),
    };
    check_listen(&file.server.listen).map_err(|m| at("listen", m))?;
    check_base_url(&file.graph.base_url).map_err(|m| at("base_url", m))?;
    check_header_timeout(file.server.header_timeout_ms).map_err(|m| at("header_timeout_ms", m))?;
    Ok(())
}

/// Bounds of `server.header_timeout_ms`: shorter would cut off honest clients on a slow link,
/// longer would let stalled connections pile up.
pub const HEADER_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 100..=600_000;

/// `server.header_timeout_ms` is within [`HEADER_TIMEOUT_MS`].
fn check_header_timeout(ms: u64) -> Result<(), String> {
    if HEADER_TIMEOUT_MS.contains(&ms) {
        Ok(())
    } else {
        Err(format!(
            "server.header_timeout_ms `{ms}` must be from {} to {} (milliseconds); the default is 10000",
            HEADER_TIMEOUT_MS.start(),
            HEADER_TIMEOUT_MS.end()
        ))
    }
}

/// `server.listen` is `host:port`: an IP address (IPv6 in brackets, `[::1]:8080`) or a host
/// name such as `localhost`, which is looked up when the gate starts (as `TcpListener::bind`
/// does), and a port from 0 to 65535. Nothing is looked up here, so `check` works offline.
fn check_listen(listen: &str) -> Result<(), String> {
    if listen.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let bad = || {
        format!(
            "server.listen `{listen}` is not an address to listen on: write host:port, e.g. 127.0.0.1:8080, 0.0.0.0:8080 or localhost:8080"
        )
    };
    let (host, port) = listen.rsplit_once(':').ok_or_else(bad)?;
    port.parse::<u16>().map_err(|_| bad())?;
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    let labels: Vec<&str> = host.split('.').collect();
    // Digits and dots that did not parse as an address (999.1.1.1) are no host name either.
    let numeric = labels.iter().all(|l| l.bytes().all(|b| b.is_ascii_digit()));
    if labels.iter().all(|l| label_ok(l)) && !numeric {
        Ok(())
    } else {
        Err(bad())
    }
}

/// `graph.base_url` is `simulator` or an absolute http(s) URL with a host.
fn check_base_url(url: &str) -> Result<(), String> {
    if url == "simulator" {
        return Ok(());
    }
    let lower = url.to_ascii_lowercase();
    let rest = ["https://", "http://"]
        .iter()
        .find(|s| lower.starts_with(**s))
        .map(|s| &url[s.len()..]);
    let authority = rest.map(|r| r.split(['/', '?', '#']).next().unwrap_or(""));
    let host = authority.map(|a| match a.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => a.split(':').next().unwrap_or(""),
    });
    match host {
        Some(h) if !h.is_empty() && !url.contains(char::is_whitespace) => Ok(()),
        _ => Err(format!(
            "graph.base_url `{url}` must be `simulator` or an absolute http(s) URL such as https://graph.facebook.com"
        )),
    }
}

/// 1-based (line, col) of the value of `key:` written inside a flow mapping
/// (`server: { listen: "…" }`), where [`locate_key`] looks only at the start of lines.
fn in_flow(src: &str, key: &str) -> Option<(usize, usize)> {
    let pat = format!("{key}:");
    src.lines().enumerate().find_map(|(n, line)| {
        let i = line.match_indices(&pat).map(|(i, _)| i).find(|&i| {
            line[..i]
                .chars()
                .next_back()
                .is_some_and(|c| c == '{' || c == ',' || c == ' ')
        })?;
        let after = &line[i + pat.len()..];
        let value = i + pat.len() + (after.len() - after.trim_start().len());
        Some((n + 1, line[..value].chars().count() + 1))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_is_host_and_port() {
        for ok in [
            "127.0.0.1:8080",
            "0.0.0.0:0",
            "[::1]:8080",
            "localhost:8080",
            "gate.example.org:443",
        ] {
            assert_eq!(check_listen(ok), Ok(()), "{ok}");
        }
        for bad in [
            "not an addr",
            "127.0.0.1",
            "8080",
            ":8080",
            "localhost:99999",
            "::1:8080",
            "999.1.1.1:80",
            "http://127.0.0.1:8080",
        ] {
            assert!(check_listen(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn base_url_is_simulator_or_an_http_url() {
        for ok in [
            "simulator",
            "https://graph.facebook.com",
            "http://127.0.0.1:9000/",
            "http://[::1]:9000",
        ] {
            assert_eq!(check_base_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "graph.facebook.com",
            "ftp://graph.facebook.com",
            "https://",
            "http://:80",
            "https://graph facebook.com",
            "",
        ] {
            assert!(check_base_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_are_located_in_flow_and_block_style() {
        let shown = Path::new("gate.yaml");
        let mut file = GateFile::default();
        file.server.listen = "not an addr".into();
        let src = "server:  { listen: \"not an addr\" }\n";
        let d = check(&file, shown, src).unwrap_err();
        assert_eq!((d.line, d.col), (1, 20));
        let mut file = GateFile::default();
        file.graph.base_url = "graph.facebook.com".into();
        let src = "graph:\n  version: v23.0\n  base_url: graph.facebook.com\n";
        let d = check(&file, shown, src).unwrap_err();
        assert_eq!((d.line, d.col), (3, 13));
    }

    #[test]
    fn header_timeout_is_bounded_and_located() {
        for ok in [100, 300, 10_000, 600_000] {
            assert_eq!(check_header_timeout(ok), Ok(()), "{ok}");
        }
        for bad in [0, 99, 600_001] {
            assert!(check_header_timeout(bad).is_err(), "{bad}");
        }
        let shown = Path::new("gate.yaml");
        let mut file = GateFile::default();
        file.server.header_timeout_ms = 0;
        let src = "server: { listen: \"127.0.0.1:0\", header_timeout_ms: 0 }\n";
        let d = check(&file, shown, src).unwrap_err();
        assert_eq!((d.line, d.col), (1, 53));
        assert!(
            d.to_string().contains("server.header_timeout_ms `0`"),
            "{d}"
        );
    }
}
