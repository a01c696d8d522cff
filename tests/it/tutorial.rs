//! README's "Write your first rule", run as written: its `sh` blocks in order (with `cargo run
//! … --` standing for the built binary) on a copy of the demo home in a temp dir, each output
//! compared with the `text` block after it (`…` matches anything), each `text log` block
//! awaited in the serving gate's log. If the tutorial rots, this fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const SECTION: &str = "## Write your first rule";

/// The section's fenced blocks: (info string, content).
fn blocks(readme: &str) -> Vec<(String, String)> {
    let start = readme
        .find(SECTION)
        .expect("README has the tutorial section");
    let rest = &readme[start + SECTION.len()..];
    let section = &rest[..rest.find("\n## ").unwrap_or(rest.len())];
    let mut out = Vec::new();
    let mut lines = section.lines();
    while let Some(l) = lines.next() {
        let Some(info) = l.strip_prefix("```") else {
            continue;
        };
        let mut body = String::new();
        for b in lines.by_ref() {
            if b.starts_with("```") {
                break;
            }
            body += b;
            body += "\n";
        }
        out.push((info.trim().to_string(), body));
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

/// A copy of the demo home (its committed files) and of `rules/`, laid out as in the
/// repository, listening on a free port.
fn demo_copy(dir: &Path) -> String {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let demo = repo.join("examples/demo");
    let to = dir.join("examples/demo");
    for sub in ["users", "credentials", "events"] {
        copy_dir(&demo.join(sub), &to.join(sub));
    }
    std::fs::copy(demo.join("identity.txt"), to.join("identity.txt")).unwrap();
    // The templates its built-in simulator knows (and checks, as Graph does).
    std::fs::copy(
        demo.join(wagate::graph::simulator::TEMPLATES_FILE),
        to.join(wagate::graph::simulator::TEMPLATES_FILE),
    )
    .unwrap();
    copy_dir(&repo.join("rules"), &dir.join("rules"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let gate = std::fs::read_to_string(demo.join("gate.yaml")).unwrap();
    assert!(gate.contains("127.0.0.1:8080"));
    std::fs::write(to.join("gate.yaml"), gate.replace("127.0.0.1:8080", &addr)).unwrap();
    addr
}

/// `cargo run [-q] -- ARGS` runs the built binary with ARGS.
/// `block` with `cargo run -q -- ARGS` running the binary under test. With `WAGATE_EXEC` set
/// (the block that starts the gate) the shell becomes the gate, so that ending the child
/// ends the gate: a gate under a shell would outlive the test.
fn script(block: &str) -> String {
    format!(
        "cargo() {{ while [ \"$1\" != -- ]; do shift; done; shift; if [ -n \"${{WAGATE_EXEC:-}}\" ]; then exec \"$WAGATE\" \"$@\"; fi; \"$WAGATE\" \"$@\"; }}\n{block}"
    )
}

fn bash(dir: &Path, block: &str) -> Command {
    let mut c = Command::new("bash");
    c.args(["-euo", "pipefail", "-c", &script(block)])
        .current_dir(dir)
        .env("WAGATE", env!("CARGO_BIN_EXE_wagate"))
        .env_remove("WAGATE_CONFIG")
        .env_remove("WAGATE_PASSPHRASE")
        .env_remove("WAGATE_LOG");
    c
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether `actual` matches `expected`, where `…` stands for anything; `whole`: the entire
/// line, else somewhere in it.
fn matches(expected: &str, actual: &str, whole: bool) -> bool {
    let parts: Vec<&str> = expected.split('…').collect();
    let mut pos = 0;
    for (i, p) in parts.iter().enumerate() {
        if i == 0 && whole {
            if !actual.starts_with(p) {
                return false;
            }
            pos = p.len();
            continue;
        }
        match actual[pos..].find(p) {
            Some(at) => pos += at + p.len(),
            None => return false,
        }
    }
    !whole || parts.len() == 1 && actual.len() == pos || actual.ends_with(parts[parts.len() - 1])
}

/// Whether the log, after its first `from` bytes, has a line matching each line of `expected`.
fn log_shows(log: &Path, from: usize, expected: &str) -> bool {
    let bytes = std::fs::read(log).unwrap_or_default();
    let text = strip_ansi(&String::from_utf8_lossy(&bytes[from.min(bytes.len())..]));
    expected
        .lines()
        .filter(|e| !e.trim().is_empty())
        .all(|e| text.lines().any(|l| matches(e.trim(), l, false)))
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_readme_tutorial_runs_as_written() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let blocks = blocks(&readme);
    let dir = tempfile::tempdir().unwrap();
    let addr = demo_copy(dir.path());
    let log: PathBuf = dir.path().join("serve.log");
    let mut server: Option<Server> = None;
    // Where the log stood when the last command started: a `text log` block after it waits
    // for a matching line written since.
    let mut log_mark = 0;
    let mut last_output: Option<(String, String)> = None;
    let (mut ran, mut compared, mut awaited) = (0, 0, 0);
    for (info, body) in &blocks {
        match info.as_str() {
            "sh" if body.trim_end().ends_with(" serve") => {
                let child = bash(dir.path(), body)
                    .env("WAGATE_EXEC", "1")
                    .stdout(std::fs::File::create(dir.path().join("serve.out")).unwrap())
                    .stderr(std::fs::File::create(&log).unwrap())
                    .spawn()
                    .unwrap();
                server = Some(Server(child));
                wait_until("the gate to serve", || {
                    std::net::TcpStream::connect(&addr).is_ok()
                });
                watcher_ready(dir.path(), &log);
                ran += 1;
            }
            "sh" => {
                log_mark = std::fs::metadata(&log).map_or(0, |m| m.len() as usize);
                let out = bash(dir.path(), body).output().unwrap();
                let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
                let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
                assert!(
                    out.status.success(),
                    "tutorial command failed:\n{body}\n{stdout}{stderr}"
                );
                last_output = Some((body.clone(), stdout));
                ran += 1;
            }
            "text log" => {
                let shown = wait_for(|| log_shows(&log, log_mark, body));
                let text = strip_ansi(&std::fs::read_to_string(&log).unwrap_or_default());
                assert!(shown, "the gate's log did not show:\n{body}--- log\n{text}");
                awaited += 1;
            }
            "text" => {
                let (cmd, stdout) = last_output.take().expect("a text block follows a command");
                let want: Vec<&str> = body.lines().collect();
                let got: Vec<&str> = stdout.lines().collect();
                let ok = want.len() == got.len()
                    && want.iter().zip(&got).all(|(w, g)| matches(w, g, true));
                assert!(
                    ok,
                    "the output of\n{cmd}is not README's:\n--- README\n{body}--- actual\n{stdout}"
                );
                compared += 1;
            }
            other => panic!("unexpected block `{other}` in the tutorial"),
        }
    }
    assert!(server.is_some(), "the tutorial starts a gate");
    assert!(
        ran >= 8 && compared >= 5 && awaited >= 2,
        "{ran} commands, {compared} outputs, {awaited} log waits"
    );
    assert!(
        !dir.path().join("rules/olga/first-rule").exists(),
        "the tutorial cleans up"
    );
}

/// Waits until the gate watches rules/: it starts watching just after it starts serving, and a
/// person is slower than that, a test is not. A comment is added to a project (of the copy)
/// until a reload shows in the log.
fn watcher_ready(dir: &Path, log: &Path) {
    let probe = dir.join("rules/azarya/auto-reply/project.yaml");
    let original = std::fs::read_to_string(&probe).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    for n in 0.. {
        let mark = std::fs::metadata(log).map_or(0, |m| m.len() as usize);
        std::fs::write(&probe, format!("{original}# watch probe {n}\n")).unwrap();
        let poll_until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < poll_until {
            if log_shows(log, mark, "rules reloaded") {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            Instant::now() < deadline,
            "the gate never reloaded its rules: {}{}",
            std::fs::read_to_string(dir.join("serve.out")).unwrap_or_default(),
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
}

fn wait_until(what: &str, f: impl FnMut() -> bool) {
    assert!(wait_for(f), "timed out waiting for {what}");
}

/// Polls `f` for up to 30 s; whether it became true.
fn wait_for(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// Runs the built binary; returns stdout, which must be a success.
fn wagate(args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_wagate"))
        .args(args)
        .env_remove("WAGATE_CONFIG")
        .env_remove("WAGATE_PASSPHRASE")
        .env_remove("WAGATE_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn the_single_user_example_home_checks_after_its_readme_steps() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = repo.join("examples/single-user");
    let readme = std::fs::read_to_string(example.join("README.md")).unwrap();
    for step in [
        "wagate init /srv/wagate",
        "cp examples/single-user/gate.yaml /srv/wagate/gate.yaml",
        "cp -r examples/single-user/users examples/single-user/rules /srv/wagate/",
        "creds set alex --from-file alex-creds.json",
        "examples/systemd/wagate.service",
    ] {
        assert!(readme.contains(step), "the example's README lost `{step}`");
    }
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("wagate");
    let os = |s: &str| std::ffi::OsString::from(s);
    wagate(&[&os("init"), home.as_os_str()]);
    std::fs::copy(example.join("gate.yaml"), home.join("gate.yaml")).unwrap();
    copy_dir(&example.join("users"), &home.join("users"));
    copy_dir(&example.join("rules"), &home.join("rules"));
    let creds = dir.path().join("alex-creds.json");
    std::fs::write(
        &creds,
        r#"{"access_token": "EAAtest-single-user", "app_secret": "s3cret-single", "webhook_verify_token": "verify-single"}"#,
    )
    .unwrap();
    let cfg = home.join("gate.yaml");
    let with_cfg = |rest: &[&std::ffi::OsStr]| {
        let mut a = vec![std::ffi::OsStr::new("--config"), cfg.as_os_str()];
        a.extend_from_slice(rest);
        wagate(&a)
    };
    with_cfg(&[
        &os("creds"),
        &os("set"),
        &os("alex"),
        &os("--from-file"),
        creds.as_os_str(),
    ]);
    assert_eq!(
        with_cfg(&[&os("check")]),
        "ok: 1 user(s), 1 project(s), 1 rule(s)\n"
    );
    let gate = std::fs::read_to_string(&cfg).unwrap();
    assert!(gate.contains("base_url: \"https://graph.facebook.com\", version: \"v23.0\""));
    // The away rule: Saturday noon answers, Monday 10:00 does not.
    let event = dir.path().join("ev.json");
    std::fs::write(
        &event,
        r#"{"kind":"message","id":"wamid.X","from":"4915100000000","name":"Kim","type":"text","text":"Hi"}"#,
    )
    .unwrap();
    let dry = |now: &str| {
        with_cfg(&[
            &os("rules"),
            &os("test"),
            &os("alex/away/away"),
            &os("--event"),
            event.as_os_str(),
            &os("--now"),
            &os(now),
        ])
    };
    assert!(dry("2026-05-16T12:00").contains(
        "would send to +4915100000000 (text, quoting wamid.X): Thanks for your message!"
    ));
    assert!(!dry("2026-05-11T10:00").contains("would send"));
}

/// The demo shows a button press too: `inject --button` presses Claire's "confirm" of the
/// PARIS-2026 reminder, and the tour's rule answers her in French.
#[test]
fn the_demo_answers_a_reply_button_pressed_with_inject() {
    let dir = tempfile::tempdir().unwrap();
    let addr = demo_copy(dir.path());
    let cfg = dir.path().join("examples/demo/gate.yaml");
    let log = dir.path().join("serve.log");
    let child = Command::new(env!("CARGO_BIN_EXE_wagate"))
        .arg("--config")
        .arg(&cfg)
        .arg("serve")
        .env_remove("WAGATE_PASSPHRASE")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _server = Server(child);
    wait_until("the gate to serve", || {
        std::net::TcpStream::connect(&addr).is_ok()
    });
    let out = Command::new(env!("CARGO_BIN_EXE_wagate"))
        .arg("--config")
        .arg(&cfg)
        .args([
            "inject",
            "olga",
            "--from",
            "33639980002",
            "--name",
            "Claire Martin",
            "--button",
            "PARIS-2026:confirm",
            "--text",
            "Je viens",
        ])
        .env_remove("WAGATE_PASSPHRASE")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("reply to +33639980002: Merci Claire"),
        "{stdout}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}
