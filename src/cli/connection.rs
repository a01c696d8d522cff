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
    match acct
        .graph
        .phone_number(phone_id, &u.creds().access_token)
        .await
    {
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
