//! Backups: an encrypted archive with no plaintext secret in it, verified against its
//! manifest, restored into a wiped home with an identical export; restore refuses to overwrite
//! without --force; scheduled backups keep the newest `keep`.

use crate::common::*;
use crate::export::{export_json, seed};
use serde_json::Value;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use wagate::backup::{self, BackupError, BackupScheduler};
use wagate::export::ExportOptions;
use wagate::vault::Vault;

fn vault(home: &Path) -> Vault {
    Vault::open(&home.join("identity.txt"), None).unwrap()
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// An export without its own time: what must be identical after a round trip.
fn content(mut v: Value) -> Value {
    v.as_object_mut().unwrap().remove("timestamp");
    v
}

#[tokio::test]
async fn backup_wipe_restore_gives_an_identical_export_and_no_plaintext_secret() {
    let tg = TestGate::start().await;
    seed(&tg).await;
    let before = content(export_json(tg.store(), &ExportOptions::default()));
    let home = tg.dir.path().to_path_buf();
    let gate = wagate::config::load_gate(&tg.config_path()).unwrap();
    // The seed's inbound photo, as the media fetcher stored it.
    let photo = std::fs::read_dir(home.join("data/media/olga"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "jpg"))
        .expect("the seed fetched a photo");
    let photo_name = photo.file_name().unwrap().to_str().unwrap().to_string();
    let photo_bytes = std::fs::read(&photo).unwrap();
    // An online backup, taken while the gate serves.
    let out = home.join("data/backups/b1.tar.age");
    let done = backup::create(&gate, tg.store(), &vault(&home), &out).unwrap();
    assert!(done.bytes > 0);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let sealed = std::fs::read(&out).unwrap();
    assert!(sealed.starts_with(b"age-encryption.org/v1"));
    // Decrypted, the archive still holds no secret in plaintext: credentials stay encrypted,
    // and the identity is not in it.
    let mut plain = Vec::new();
    vault(&home)
        .decrypt_stream(&out, sealed.as_slice())
        .unwrap()
        .read_to_end(&mut plain)
        .unwrap();
    for u in [OLGA, AZARYA] {
        for secret in [u.token, u.secret, u.verify] {
            assert!(
                !contains(&sealed, secret) && !contains(&plain, secret),
                "{secret} leaked"
            );
        }
    }
    assert!(
        !contains(&plain, "AGE-SECRET-KEY-1"),
        "the identity is not in a backup"
    );
    assert!(contains(&plain, "credentials/olga.age"));
    assert!(contains(&plain, "rules/olga/replies/echo.rhai"));
    let m = backup::verify(&vault(&home), &out).unwrap();
    let names: Vec<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        names,
        [
            "gate.yaml",
            "users/azarya.yaml",
            "users/olga.yaml",
            "credentials/azarya.age",
            "credentials/olga.age",
            "rules/olga/replies/echo.rhai",
            "rules/olga/replies/project.yaml",
            format!("media/olga/{photo_name}").as_str(),
            "data/wagate.db"
        ]
    );
    // A damaged archive fails verification.
    let mut bad = sealed.clone();
    let at = bad.len() - 100;
    bad[at] ^= 0x55;
    let damaged = home.join("damaged.tar.age");
    std::fs::write(&damaged, &bad).unwrap();
    assert!(backup::verify(&vault(&home), &damaged).is_err());
    // Another identity cannot read it.
    let other = tempfile::tempdir().unwrap();
    wagate::vault::generate_identity_file(&other.path().join("identity.txt")).unwrap();
    let e = backup::verify(&vault(other.path()), &out).unwrap_err();
    assert!(matches!(e, BackupError::Vault(_)), "{e}");

    // Wipe: the gate stops and the home is gone; the identity was kept elsewhere.
    let keep = tempfile::tempdir().unwrap();
    let archive = keep.path().join("b1.tar.age");
    std::fs::copy(&out, &archive).unwrap();
    std::fs::copy(home.join("identity.txt"), keep.path().join("identity.txt")).unwrap();
    tg.shutdown().await;
    let fresh = tempfile::tempdir().unwrap();
    let cfg = fresh.path().join("gate.yaml");
    let done = backup::restore(&vault(keep.path()), &archive, &cfg, false).unwrap();
    assert_eq!(done.files, 9);
    assert_eq!(
        std::fs::read(fresh.path().join("data/media/olga").join(&photo_name)).unwrap(),
        photo_bytes,
        "the media file is restored"
    );
    let store = wagate::store::Store::open(&fresh.path().join("data/wagate.db")).unwrap();
    let after = content(export_json(&store, &ExportOptions::default()));
    assert_eq!(after, before, "the round trip changes nothing");
    // The restored home works: with the identity back, every credential decrypts.
    std::fs::copy(
        keep.path().join("identity.txt"),
        fresh.path().join("identity.txt"),
    )
    .unwrap();
    let summary = wagate::app::check(&cfg).unwrap();
    assert!(
        summary.ends_with("ok: 2 user(s), 1 project(s), 1 rule(s)"),
        "{summary}"
    );
    // Restoring again is refused without --force, and done with it.
    let e = backup::restore(&vault(keep.path()), &archive, &cfg, false).unwrap_err();
    assert!(matches!(e, BackupError::NotEmpty(_)), "{e}");
    assert!(e.to_string().contains("--force"), "{e}");
    std::fs::write(fresh.path().join("rules/olga/replies/stray.rhai"), "1").unwrap();
    backup::restore(&vault(keep.path()), &archive, &cfg, true).unwrap();
    assert!(!fresh.path().join("rules/olga/replies/stray.rhai").exists());
    let store = wagate::store::Store::open(&fresh.path().join("data/wagate.db")).unwrap();
    assert_eq!(
        content(export_json(&store, &ExportOptions::default())),
        before
    );
}

#[tokio::test]
async fn the_cli_backs_up_verifies_and_restores() {
    let tg = TestGate::start().await;
    seed(&tg).await;
    let cfg = tg.config_path();
    let cfg = cfg.to_str().unwrap();
    let out = wagate_cli(&["--config", cfg, "backup"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("backup written to data/backups/wagate-"),
        "{stdout}"
    );
    let dir = tg.dir.path().join("data/backups");
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let out = wagate_cli(&["--config", cfg, "backup", "verify", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("holds 9 file(s)"));
    let fresh = tempfile::tempdir().unwrap();
    std::fs::copy(
        tg.dir.path().join("identity.txt"),
        fresh.path().join("identity.txt"),
    )
    .unwrap();
    let new_cfg = fresh.path().join("gate.yaml");
    let new_cfg = new_cfg.to_str().unwrap();
    let out = wagate_cli(&["--config", new_cfg, "restore", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("restored 9 file(s)"));
    let again = wagate_cli(&["--config", new_cfg, "restore", file.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to restore"));
    let check = wagate_cli(&["--config", new_cfg, "check"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    tg.shutdown().await;
}

#[tokio::test]
async fn scheduled_backups_run_at_their_cron_times_and_keep_the_newest() {
    use chrono::TimeZone;
    let tg = TestGate::start().await;
    let gate = wagate::config::load_gate(&tg.config_path()).unwrap();
    let t0 = chrono::Utc.with_ymd_and_hms(2026, 5, 1, 2, 0, 0).unwrap();
    let clock = Arc::new(wagate::scheduler::ManualClock::new(t0));
    let section: wagate::config::BackupSection =
        serde_yaml::from_str("{ cron: \"0 3 * * *\", keep: 2, dir: data/nightly }").unwrap();
    let b = BackupScheduler::new(
        gate,
        tg.store().clone(),
        Arc::new(vault(tg.dir.path())),
        &section,
        clock,
    )
    .unwrap();
    assert_eq!(b.next(), Some(t0 + chrono::Duration::hours(1)));
    assert!(
        b.tick(t0 + chrono::Duration::minutes(59))
            .unwrap()
            .is_none()
    );
    let mut written = Vec::new();
    for day in 0..3 {
        let at = t0 + chrono::Duration::hours(1) + chrono::Duration::days(day);
        let done = b.tick(at).unwrap().expect("a backup at 03:00");
        written.push(done.path.clone());
        assert!(b.tick(at).unwrap().is_none(), "once per cron time");
        assert_eq!(b.next(), Some(at + chrono::Duration::days(1)));
    }
    let mut left: Vec<_> = std::fs::read_dir(tg.dir.path().join("data/nightly"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    left.sort();
    assert_eq!(left, written[1..].to_vec(), "keep: 2");
    backup::verify(&vault(tg.dir.path()), &left[1]).unwrap();
    let bad: wagate::config::BackupSection =
        serde_yaml::from_str("{ cron: \"every night\" }").unwrap();
    assert!(
        backup::check_section(&bad)
            .unwrap_err()
            .contains("backup.cron")
    );
    tg.shutdown().await;
}

/// A cron time that passed while the gate was down gives one backup at the next start, not
/// one per missed time, and none when nothing was missed.
#[tokio::test]
async fn a_backup_missed_while_the_gate_was_down_is_caught_up_once_at_start() {
    use chrono::TimeZone;
    let tg = TestGate::start().await;
    let gate = wagate::config::load_gate(&tg.config_path()).unwrap();
    let section: wagate::config::BackupSection =
        serde_yaml::from_str("{ cron: \"0 3 * * *\", keep: 5, dir: data/nightly }").unwrap();
    let scheduler_at = |t| {
        BackupScheduler::new(
            gate.clone(),
            tg.store().clone(),
            Arc::new(vault(tg.dir.path())),
            &section,
            Arc::new(wagate::scheduler::ManualClock::new(t)),
        )
        .unwrap()
    };
    let night = chrono::Utc.with_ymd_and_hms(2026, 5, 1, 3, 0, 0).unwrap();
    let b = scheduler_at(night - chrono::Duration::minutes(1));
    assert!(b.tick(night).unwrap().is_some(), "the 03:00 backup");
    // Started again the same day: nothing was missed.
    let later = night + chrono::Duration::hours(5);
    assert_eq!(
        scheduler_at(later).next(),
        Some(night + chrono::Duration::days(1))
    );
    // Started again three days later: one catch-up backup now.
    let back = night + chrono::Duration::days(3) + chrono::Duration::hours(7);
    let b = scheduler_at(back);
    assert_eq!(b.next(), Some(back));
    let done = b.tick(back).unwrap().expect("the catch-up backup");
    assert!(done.path.exists());
    assert_eq!(b.next(), Some(night + chrono::Duration::days(4)));
    assert_eq!(
        wagate::backup::newest_backup_time(&tg.dir.path().join("data/nightly")),
        Some(back)
    );
    tg.shutdown().await;
}
