//! `wagate test-connection USER`: asks Graph about USER's phone number with USER's token and
//! says plainly what works: the number (display number, verified name, quality, throughput)
//! and the token. A token Graph rejects is recorded as invalid, as a send would record it.

use super::CliError;
use super::account::Account;
use crate::graph::GraphError;
use crate::sender::{fingerprint, policy};
use serde_json::Value;
use std::path::Path;

pub(super) async fn run(config: &Path, user: &str) -> Result<(), CliError> {
    let acct = Account::open(config, user)?;
    let u = &acct.user;
    let phone_id = &u.config.phone_number_id;
    println!(
        "user `{}`: phone_number_id {phone_id}, Graph {} at {}",
        acct.id, acct.home.gate.file.graph.version, acct.graph_at
    );
    let answer = acct
        .graph
        .phone_number(phone_id, &u.creds().access_token)
        .await;
    audit(&acct, &answer)?;
    match answer {
        Ok(info) => {
            let f = |k: &str| {
                info.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_string()
            };
            let level = info
                .pointer("/throughput/level")
                .and_then(Value::as_str)
                .unwrap_or("?");
            println!(
                "phone number: {} \"{}\", quality {}, name {}, verification {}, throughput {level}",
                f("display_phone_number"),
                f("verified_name"),
                f("quality_rating"),
                f("name_status"),
                f("code_verification_status"),
            );
            let expiry = match &u.creds().token_expires_at {
                Some(t) => format!("expires {}", t.to_rfc3339()),
                None => "expiry not recorded".to_string(),
            };
            println!("token: valid (Graph accepted it; {expiry})");
            let store = acct.store()?;
            let fp = fingerprint(u.creds().access_token.expose());
            if store.token_invalid(acct.id.as_str(), &fp)?.is_some() {
                store.clear_token_invalid(acct.id.as_str())?;
                println!("token: the earlier \"invalid\" mark is cleared; sends resume");
            }
            Ok(())
        }
        Err(e) => Err(CliError::failure(explain(&acct, &e)?)),
    }
}

/// Records the check in USER's audit log (`connection.test`): the number asked about, the
/// outcome (`ok`, `token_invalid`, `unreachable`, `refused`, `failed`), Graph's reason, and the
/// token's fingerprint, never the token.
fn audit(acct: &Account, answer: &Result<Value, GraphError>) -> Result<(), CliError> {
    let token = acct.user.creds().access_token.clone();
    let mut details = serde_json::json!({
        "phone_number_id": acct.user.config.phone_number_id,
        "fingerprint": fingerprint(token.expose()),
    });
    match answer {
        Ok(info) => {
            details["outcome"] = "ok".into();
            details["quality"] = info.get("quality_rating").cloned().unwrap_or(Value::Null);
        }
        Err(e) => {
            let outcome = match (policy::classify(e), e) {
                (policy::Verdict::TokenInvalid, _) => "token_invalid",
                (_, GraphError::Network(_)) => "unreachable",
                (_, GraphError::Api { error: Some(b), .. })
                    if b.code == 100 || (200..300).contains(&b.code) =>
                {
                    "refused"
                }
                _ => "failed",
            };
            details["outcome"] = outcome.into();
            // Graph's words, with the token taken out should an answer ever echo it.
            let mut reason = policy::reason(e);
            if !token.expose().is_empty() {
                reason = reason.replace(token.expose().as_str(), "***");
            }
            details["reason"] = reason.into();
        }
    }
    acct.store()?
        .audit(acct.id.as_str(), "connection.test", &details)
        .map_err(|e| CliError::failure(format!("cannot record the check in the audit log: {e}")))
}

/// A failed check in words, recording an invalid token as the sender would.
fn explain(acct: &Account, e: &GraphError) -> Result<String, CliError> {
    let reason = policy::reason(e);
    let user = acct.id.as_str();
    Ok(match policy::classify(e) {
        policy::Verdict::TokenInvalid => {
            let store = acct.store()?;
            let fp = fingerprint(acct.user.creds().access_token.expose());
            store.mark_token_invalid(user, &fp, &reason)?;
            format!(
                "token: INVALID: {reason}\nsends of `{user}` stop until new credentials are set: `wagate creds set {user} --from-file F.json`"
            )
        }
        _ => match e {
            GraphError::Network(_) => {
                format!("cannot reach Graph ({reason}); Graph is {}", acct.graph_at)
            }
            GraphError::Api { error: Some(b), .. }
                if b.code == 100 || (200..300).contains(&b.code) =>
            {
                format!(
                    "phone number {}: Graph refuses it ({reason}); check phone_number_id in the users file and that the token's system user has access to the WhatsApp account",
                    acct.user.config.phone_number_id
                )
            }
            _ => format!("Graph check failed: {reason}"),
        },
    })
}
