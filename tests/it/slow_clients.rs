//! Slow and idle clients (slowloris): a connection that does not deliver a request's line and
//! headers within gate.yaml's `server.header_timeout_ms` is closed, whether it stalls, trickles
//! its headers or idles between keep-alive requests, while the gate goes on serving the
//! others; keep-alive, the peer address (ConnectInfo) and graceful shutdown still work.

use crate::common::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any one wait of these tests may take before it fails.
const WAIT: Duration = Duration::from_secs(10);

/// The test gate (Olga's echo rule) restarted with `server.header_timeout_ms: ms`.
async fn gate_with_header_timeout(ms: u64) -> TestGate {
    let mut tg = TestGate::start().await;
    let path = tg.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let with = text.replace(
        "server: { listen: \"127.0.0.1:0\" }",
        &format!("server: {{ listen: \"127.0.0.1:0\", header_timeout_ms: {ms} }}"),
    );
    assert_ne!(
        text, with,
        "gate.yaml's server line is where the test expects it"
    );
    std::fs::write(&path, with).unwrap();
    tg.restart().await;
    tg
}

/// Reads until the gate closes the connection (EOF, or a reset), within [`WAIT`]: the bytes
/// read meanwhile. Panics if the connection is still open after [`WAIT`].
async fn read_until_closed(s: &mut (impl AsyncReadExt + Unpin), what: &str) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => panic!("{what}: the gate still holds the connection after {WAIT:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// True while the gate has neither closed `s` nor written to it.
fn still_open(s: &TcpStream) -> bool {
    let mut buf = [0u8; 16];
    matches!(s.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// One HTTP/1.1 response read from `s` (its head and a `content-length` body): (status, head,
/// body), within [`WAIT`].
async fn read_response(s: &mut TcpStream) -> (u16, String, String) {
    let mut got: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut read_more = async |got: &mut Vec<u8>| {
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .expect("a response within the deadline")
            .expect("the connection stays readable");
        assert!(
            n > 0,
            "closed before a whole response: {:?}",
            String::from_utf8_lossy(got)
        );
        got.extend_from_slice(&buf[..n]);
    };
    let head_end = loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        read_more(&mut got).await;
    };
    let head = String::from_utf8_lossy(&got[..head_end]).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("a content-length: {head}"));
    while got.len() < head_end + len {
        read_more(&mut got).await;
    }
    assert_eq!(got.len(), head_end + len, "nothing after the body: {head}");
    let status = head[9..12].parse().unwrap();
    let body = String::from_utf8_lossy(&got[head_end..]).into_owned();
    (status, head, body)
}

/// A client that sends half a webhook's head and stalls, one that connects and sends nothing,
/// and one that trickles header bytes without ever ending them, are each closed once the
/// header timeout has passed, and not before; a webhook posted meanwhile on another connection
/// is answered 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_trickling_heads_are_closed_after_the_timeout_while_others_are_served() {
    const TIMEOUT: Duration = Duration::from_millis(1500);
    let tg = gate_with_header_timeout(TIMEOUT.as_millis() as u64).await;
    let addr = tg.gate().addr;
    let t0 = Instant::now();
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(b"POST /webhook/whatsapp/olga HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let silent = TcpStream::connect(addr).await.unwrap();
    let trickle = TcpStream::connect(addr).await.unwrap();
    let (trickle_r, mut trickle_w) = trickle.into_split();
    // One header byte every 50 ms: each read brings something, the head never ends.
    let writer = tokio::spawn(async move {
        let head = format!(
            "GET /healthz HTTP/1.1\r\nhost: x\r\nx-pad: {}",
            "a".repeat(400)
        );
        for b in head.bytes() {
            if trickle_w.write_all(&[b]).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    });

    // Meanwhile the gate serves a normal webhook on its own connection.
    let body = text_webhook(OLGA, "33611112222", "Ana", "wamid.SLOW1", "hello");
    let r = tg.post_signed(OLGA, &body).await;
    assert_eq!(r.status(), 200);
    assert!(
        t0.elapsed() < TIMEOUT,
        "the webhook was answered while the slow clients were still connected ({:?})",
        t0.elapsed()
    );
    assert!(
        still_open(&half),
        "the half head is not cut before its time"
    );
    assert!(
        still_open(&silent),
        "the silent connection is not cut before its time"
    );

    let clients: [(&str, Box<dyn tokio::io::AsyncRead + Unpin + Send>); 3] = [
        ("half a head", Box::new(half)),
        ("nothing sent", Box::new(silent)),
        ("a trickled head", Box::new(trickle_r)),
    ];
    for (what, mut s) in clients {
        let got = read_until_closed(&mut s, what).await;
        let elapsed = t0.elapsed();
        assert!(
            got.is_empty(),
            "{what}: closed without an answer: {:?}",
            String::from_utf8_lossy(&got)
        );
        assert!(
            elapsed >= TIMEOUT - Duration::from_millis(50),
            "{what}: closed after {elapsed:?}, before the timeout"
        );
        assert!(elapsed < TIMEOUT + WAIT, "{what}: {elapsed:?}");
    }
    let writer_saw_close = tokio::time::timeout(WAIT, writer).await.unwrap().unwrap();
    assert!(
        writer_saw_close,
        "the trickling client's writes fail: the gate closed its end (its head is 430 bytes, 21 s at this pace)"
    );
    // The webhook answered meanwhile was committed and is handled as usual.
    let rows = settled(&tg, "olga").await;
    assert_eq!(rows.len(), 1, "the echo reply: {rows:?}");
    tg.shutdown().await;
}

/// Keep-alive still works: two requests on one connection, each answered, with the operator's
/// details of /healthz (the gate sees the loopback peer address). Then the idle connection is
/// closed once the header timeout has passed since the last answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_serves_two_requests_on_one_connection_and_closes_it_when_idle() {
    const TIMEOUT: Duration = Duration::from_millis(300);
    let tg = gate_with_header_timeout(TIMEOUT.as_millis() as u64).await;
    let mut s = TcpStream::connect(tg.gate().addr).await.unwrap();
    for i in 0..2 {
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let (status, head, body) = read_response(&mut s).await;
        assert_eq!(status, 200, "request {i}: {head}");
        assert!(
            !head.to_ascii_lowercase().contains("connection: close"),
            "request {i}: {head}"
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v["users"],
            serde_json::json!(["azarya", "olga"]),
            "request {i}: loopback sees the details: {body}"
        );
    }
    let idle = Instant::now();
    let got = read_until_closed(&mut s, "an idle keep-alive connection").await;
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    let elapsed = idle.elapsed();
    assert!(
        elapsed >= TIMEOUT - Duration::from_millis(50),
        "closed after {elapsed:?}, before the timeout"
    );
    tg.shutdown().await;
}

/// A stop waits for a webhook in flight: the listener closes (new connections are refused),
/// the request whose body is still to come is answered 200 and committed, and only then does
/// the stop finish. A client stalled in its head does not hold the stop beyond the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_lets_a_webhook_in_flight_finish_and_is_not_held_by_a_stalled_head() {
    const TIMEOUT: Duration = Duration::from_millis(1000);
    let mut tg = gate_with_header_timeout(TIMEOUT.as_millis() as u64).await;
    let addr = tg.gate().addr;
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let body = text_webhook(OLGA, "33611113333", "Ana", "wamid.STOP1", "hello");
    let sig = wagate::whatsapp::sign(OLGA.secret.as_bytes(), &body);
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /webhook/whatsapp/olga HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-hub-signature-256: {sig}\r\ncontent-length: {}\r\nexpect: 100-continue\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    // "100 Continue" comes when the handler starts reading the body: the request is in flight.
    let mut cont = [0u8; 25];
    tokio::time::timeout(WAIT, s.read_exact(&mut cont))
        .await
        .expect("100 Continue within the deadline")
        .unwrap();
    assert_eq!(&cont, b"HTTP/1.1 100 Continue\r\n\r\n");

    let stopped = Arc::new(AtomicBool::new(false));
    let stop = {
        let stopped = stopped.clone();
        let tg = &mut tg;
        async move {
            // The gate stops (TestGate waits up to 10 s for it), then a new one starts on the
            // same home and another port.
            let t = Instant::now();
            tg.restart().await;
            stopped.store(true, Ordering::SeqCst);
            t.elapsed()
        }
    };
    let client = async {
        eventually("the listener to close", WAIT, || async {
            TcpStream::connect(addr).await.is_err().then_some(())
        })
        .await;
        assert!(
            !stopped.load(Ordering::SeqCst),
            "the stop waits for the webhook in flight"
        );
        s.write_all(&body).await.unwrap();
        let (status, head, answer) = read_response(&mut s).await;
        let closed = read_until_closed(&mut s, "the webhook's connection after the stop").await;
        let stalled_got = read_until_closed(&mut stalled, "a head stalled at the stop").await;
        (status, head, answer, closed, stalled_got)
    };
    let (took, (status, head, answer, closed, stalled_got)) = tokio::join!(stop, client);
    assert_eq!(status, 200, "{head}{answer}");
    assert!(closed.is_empty(), "{:?}", String::from_utf8_lossy(&closed));
    assert!(
        stalled_got.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&stalled_got)
    );
    assert!(
        took < TIMEOUT + Duration::from_secs(5),
        "the stop took {took:?}: the stalled head held it"
    );
    let rows = settled(&tg, "olga").await;
    assert_eq!(
        rows.len(),
        1,
        "the webhook answered during the stop was committed and is answered after it: {rows:?}"
    );
    tg.shutdown().await;
}

/// `check` refuses a header timeout out of bounds, located on its key, and takes one within.
#[test]
fn check_bounds_the_header_timeout_and_names_where_it_is_written() {
    let dir = tempfile::tempdir().unwrap();
    write_home(
        dir.path(),
        "http://127.0.0.1:9",
        &[ECHO_PROJECT, ECHO_SCRIPT],
    );
    let gate_yaml = dir.path().join("gate.yaml");
    let text = std::fs::read_to_string(&gate_yaml).unwrap();
    let cfg = gate_yaml.to_str().unwrap();
    for (ms, ok) in [(50, false), (100, true), (600_000, true), (600_001, false)] {
        let with = text.replace(
            "server: { listen: \"127.0.0.1:0\" }",
            &format!("server:\n  listen: \"127.0.0.1:0\"\n  header_timeout_ms: {ms}\n"),
        );
        assert_ne!(with, text);
        std::fs::write(&gate_yaml, with).unwrap();
        let out = wagate_cli(&["--config", cfg, "check"]);
        let said = output_text(&out);
        if ok {
            assert!(out.status.success(), "{ms}: {said}");
        } else {
            assert_eq!(out.status.code(), Some(1), "{ms}: {said}");
            assert!(
                said.contains(&format!(
                    "server.header_timeout_ms `{ms}` must be from 100 to 600000"
                )),
                "{said}"
            );
            assert!(
                said.contains("gate.yaml:3:22"),
                "located on the value: {said}"
            );
        }
    }
}
