//! Importer credentials (API tokens, client secrets, private keys), sealed at rest with the
//! server's secret key (see `encryption`). Only their existence and rotation time are ever
//! shown; the plaintext leaves this module only for the importer that uses it.

use diesel::prelude::*;

use super::rows::SecretRow;
use super::schema::secrets;
use super::{now_millis, DbConn};
use crate::encryption::{Sealed, SecretKey};
use crate::error::{Error, Result};
use crate::ids::DirectoryId;

/// What may be shown about a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretStatus {
    pub name: String,
    pub created_at: i64,
    pub rotated_at: i64,
}

/// The associated data of a sealed value: the row it belongs to.
fn context(owner: &str, name: &str) -> String {
    format!("{owner}/{name}")
}

/// Stores (or rotates) the secret `name` of `owner` (e.g. a connection id).
pub fn put(
    conn: &mut DbConn,
    key: &SecretKey,
    directory: &DirectoryId,
    owner: &str,
    name: &str,
    plaintext: &[u8],
) -> Result<SecretStatus> {
    let sealed = key.seal(plaintext, &context(owner, name))?;
    let now = now_millis();
    let existing: Option<SecretRow> = secrets::table
        .filter(secrets::owner.eq(owner))
        .filter(secrets::name.eq(name))
        .select(SecretRow::as_select())
        .first(conn)
        .optional()?;
    let created_at = match existing {
        Some(row) => {
            diesel::update(secrets::table.find(&row.id))
                .set((
                    secrets::nonce.eq(&sealed.nonce),
                    secrets::ciphertext.eq(&sealed.ciphertext),
                    secrets::rotated_at.eq(now),
                ))
                .execute(conn)?;
            row.created_at
        }
        None => {
            let row = SecretRow {
                id: uuid::Uuid::now_v7().to_string(),
                directory_id: directory.0.clone(),
                owner: owner.to_string(),
                name: name.to_string(),
                nonce: sealed.nonce,
                ciphertext: sealed.ciphertext,
                created_at: now,
                rotated_at: now,
            };
            diesel::insert_into(secrets::table).values(&row).execute(conn)?;
            now
        }
    };
    Ok(SecretStatus { name: name.to_string(), created_at, rotated_at: now })
}

/// The plaintext of a secret, if it is set.
pub fn reveal(conn: &mut DbConn, key: &SecretKey, owner: &str, name: &str) -> Result<Option<Vec<u8>>> {
    let row: Option<SecretRow> = secrets::table
        .filter(secrets::owner.eq(owner))
        .filter(secrets::name.eq(name))
        .select(SecretRow::as_select())
        .first(conn)
        .optional()?;
    row.map(|row| key.open(&Sealed { nonce: row.nonce, ciphertext: row.ciphertext }, &context(owner, name)))
        .transpose()
}

/// Which secrets of `owner` are set, and when each was last rotated.
pub fn statuses(conn: &mut DbConn, owner: &str) -> Result<Vec<SecretStatus>> {
    Ok(secrets::table
        .filter(secrets::owner.eq(owner))
        .order(secrets::name.asc())
        .select((secrets::name, secrets::created_at, secrets::rotated_at))
        .load::<(String, i64, i64)>(conn)?
        .into_iter()
        .map(|(name, created_at, rotated_at)| SecretStatus { name, created_at, rotated_at })
        .collect())
}

/// Removes one secret of `owner`.
pub fn delete(conn: &mut DbConn, owner: &str, name: &str) -> Result<usize> {
    Ok(diesel::delete(secrets::table.filter(secrets::owner.eq(owner)).filter(secrets::name.eq(name)))
        .execute(conn)?)
}

/// Removes every secret of `owner`.
pub fn forget(conn: &mut DbConn, owner: &str) -> Result<usize> {
    Ok(diesel::delete(secrets::table.filter(secrets::owner.eq(owner))).execute(conn)?)
}

/// Checked at start-up: stored secrets need a key, and it must be the key they were sealed
/// with (one is opened to prove it). Fails with a message for the operator.
pub fn check_key(conn: &mut DbConn, key: Option<&SecretKey>) -> Result<()> {
    let stored: i64 = secrets::table.count().get_result(conn)?;
    if stored == 0 {
        return Ok(());
    }
    let Some(key) = key else {
        return Err(Error::Config(format!(
            "the database holds {stored} encrypted importer secret(s) but no secret key is configured: set \
             SCIMD_SECRET_KEY (or secret_key_file) to the key they were stored with"
        )));
    };
    let row: SecretRow =
        secrets::table.order(secrets::id.asc()).select(SecretRow::as_select()).first(conn)?;
    key.open(&Sealed { nonce: row.nonce, ciphertext: row.ciphertext }, &context(&row.owner, &row.name))
        .map(|_| ())
        .map_err(|_| {
            Error::Config(
                "the configured secret key does not open the stored importer secrets: set SCIMD_SECRET_KEY (or \
                 secret_key_file) to the key they were stored with"
                    .into(),
            )
        })
}
