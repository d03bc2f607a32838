//! Idempotent creation: a retry with the same `Idempotency-Key` from the same caller returns
//! the first result and creates nothing. The key is claimed in the same transaction as the
//! creation (so a failed request is not remembered, and two concurrent requests with one key
//! cannot both create), in the storage of the service that owns the resource.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::DbConnection;
use crate::time;

/// gRPC metadata carrying the client's key and who the caller is (set by the gateway).
pub const KEY_HEADER: &str = "idempotency-key";
pub const SCOPE_HEADER: &str = "idempotency-scope";
/// How long a key is remembered.
pub const KEEP_HOURS: i64 = 24;
/// Longest key accepted.
pub const MAX_KEY_LEN: usize = 255;

diesel::table! {
    /// Created by each service's own migrations.
    idempotency_keys (scope, key) {
        scope -> Text,
        key -> Text,
        request_hash -> BigInt,
        response -> Binary,
        created_at -> Timestamp,
    }
}

/// One client key, scoped to its tenant and caller, with a fingerprint of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    scope: String,
    key: String,
    request_hash: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum IdempotencyError {
    #[error("Idempotency-Key: already used with a different request")]
    Mismatch,
    /// Another request with the same key committed first: retry the whole call to replay it.
    #[error("Idempotency-Key: a concurrent request with this key finished first")]
    Race,
    #[error("Idempotency-Key: {0}")]
    Invalid(String),
    #[error(transparent)]
    Db(#[from] diesel::result::Error),
}

impl IdempotencyKey {
    /// From gRPC metadata; `customer_id` and `method` keep tenants and calls apart; `request` is
    /// the encoded request, whose fingerprint tells a retry from a different request.
    pub fn from_metadata(
        metadata: &tonic::metadata::MetadataMap,
        customer_id: &str,
        method: &str,
        request: &[u8],
    ) -> Result<Option<IdempotencyKey>, IdempotencyError> {
        let Some(key) = metadata.get(KEY_HEADER) else {
            return Ok(None);
        };
        let key = key
            .to_str()
            .map_err(|_| IdempotencyError::Invalid("must be printable ASCII".into()))?;
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(IdempotencyError::Invalid(format!(
                "must be 1 to {MAX_KEY_LEN} characters"
            )));
        }
        let caller = metadata
            .get(SCOPE_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        Ok(Some(IdempotencyKey {
            scope: format!("{customer_id}/{caller}/{method}"),
            key: key.to_owned(),
            request_hash: fnv1a(request) as i64,
        }))
    }

    /// The key of a gRPC request, fingerprinted by the request message.
    pub fn of_request<T: prost::Message>(
        req: &tonic::Request<T>,
        customer_id: &str,
        method: &str,
    ) -> Result<Option<IdempotencyKey>, IdempotencyError> {
        Self::from_metadata(
            req.metadata(),
            customer_id,
            method,
            &req.get_ref().encode_to_vec(),
        )
    }

    /// In the creating transaction, before the creation: the first result's bytes when this is
    /// a retry, or None after claiming the key for this request.
    pub fn replay_or_claim(
        &self,
        conn: &mut DbConnection,
    ) -> Result<Option<Vec<u8>>, IdempotencyError> {
        let found: Option<(i64, Vec<u8>, NaiveDateTime)> = idempotency_keys::table
            .filter(idempotency_keys::scope.eq(&self.scope))
            .filter(idempotency_keys::key.eq(&self.key))
            .select((
                idempotency_keys::request_hash,
                idempotency_keys::response,
                idempotency_keys::created_at,
            ))
            .first(conn)
            .optional()?;
        let now = time::now();
        if let Some((hash, response, created_at)) = found {
            if now - created_at < chrono::Duration::hours(KEEP_HOURS) {
                if hash != self.request_hash {
                    return Err(IdempotencyError::Mismatch);
                }
                return Ok(Some(response));
            }
            diesel::delete(
                idempotency_keys::table
                    .filter(idempotency_keys::scope.eq(&self.scope))
                    .filter(idempotency_keys::key.eq(&self.key)),
            )
            .execute(conn)?;
        }
        diesel::insert_into(idempotency_keys::table)
            .values((
                idempotency_keys::scope.eq(&self.scope),
                idempotency_keys::key.eq(&self.key),
                idempotency_keys::request_hash.eq(self.request_hash),
                idempotency_keys::response.eq(Vec::<u8>::new()),
                idempotency_keys::created_at.eq(now),
            ))
            .execute(conn)
            .map_err(|e| match e {
                diesel::result::Error::DatabaseError(
                    diesel::result::DatabaseErrorKind::UniqueViolation,
                    _,
                ) => IdempotencyError::Race,
                other => other.into(),
            })?;
        Ok(None)
    }

    /// Records the result for later retries (same transaction as the creation).
    pub fn complete(&self, conn: &mut DbConnection, response: &[u8]) -> QueryResult<()> {
        diesel::update(
            idempotency_keys::table
                .filter(idempotency_keys::scope.eq(&self.scope))
                .filter(idempotency_keys::key.eq(&self.key)),
        )
        .set(idempotency_keys::response.eq(response))
        .execute(conn)
        .map(|_| ())
    }
}

/// Forgets keys older than the retention (run now and then).
pub fn purge_expired(conn: &mut DbConnection) -> QueryResult<usize> {
    let cutoff = time::now() - chrono::Duration::hours(KEEP_HOURS);
    diesel::delete(idempotency_keys::table.filter(idempotency_keys::created_at.lt(cutoff)))
        .execute(conn)
}

/// FNV-1a, 64 bit: a stable fingerprint (std's hasher may change between Rust releases, and
/// keys outlive a deploy).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_stable_and_tells_requests_apart() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(fnv1a(b"{\"text\":\"a\"}"), fnv1a(b"{\"text\":\"b\"}"));
    }

    #[test]
    fn keys_are_scoped_to_tenant_caller_and_method() {
        let mut md = tonic::metadata::MetadataMap::new();
        assert!(matches!(
            IdempotencyKey::from_metadata(&md, "c", "m", b"x"),
            Ok(None)
        ));
        md.insert(KEY_HEADER, "k1".parse().unwrap());
        md.insert(SCOPE_HEADER, "agent:a".parse().unwrap());
        let k = IdempotencyKey::from_metadata(&md, "c", "m", b"x")
            .unwrap()
            .unwrap();
        assert_eq!(k.scope, "c/agent:a/m");
        let other = IdempotencyKey::from_metadata(&md, "d", "m", b"x")
            .unwrap()
            .unwrap();
        assert_ne!(k.scope, other.scope);
        md.insert(KEY_HEADER, "x".repeat(300).parse().unwrap());
        assert!(IdempotencyKey::from_metadata(&md, "c", "m", b"x").is_err());
    }
}
