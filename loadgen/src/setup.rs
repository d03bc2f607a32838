//! Setting up through the public API: tokens minted with the gateway's key, a fresh tenant's
//! chats, and each agent's chatroom.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use uuid::Uuid;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Permission bits (see the README's "Tokens").
pub const AGENT: u64 = 0x0010;

/// Tokens valid for this long: longer than any run.
const TOKEN_TTL: Duration = Duration::from_secs(6 * 3600);

fn exp() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
        + TOKEN_TTL.as_secs()
}

fn sign(secret: &[u8], claims: &Value) -> Result<String, BoxError> {
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )?)
}

/// A customer-level admin token, in the seed's shape (`customer` is a JSON-encoded string).
/// `jti` only makes each token distinct: the gateway's rate limit counts per token.
pub fn customer_token(secret: &[u8], customer_id: Uuid) -> Result<String, BoxError> {
    sign(
        secret,
        &json!({
            "customer": json!({"id": customer_id}).to_string(),
            "exp": exp(),
            "jti": Uuid::new_v4(),
        }),
    )
}

/// An agent token (the `agent` object shape the gateway's `token` command mints).
pub fn agent_token(
    secret: &[u8],
    customer_id: Uuid,
    agent_id: Uuid,
    name: &str,
) -> Result<String, BoxError> {
    sign(
        secret,
        &json!({
            "agent": {
                "id": agent_id,
                "customer_id": customer_id,
                "permission": AGENT,
                "name": name,
                "username": name,
            },
            "exp": exp(),
        }),
    )
}

/// A chat of the set-up: its id and participants (the owner first).
#[derive(Debug, Clone)]
pub struct Chat {
    pub id: String,
    pub participants: Vec<Uuid>,
}

/// The API's answer as JSON, or an error naming the status and the API's message.
pub async fn json_of(res: reqwest::Response, what: &str) -> Result<Value, BoxError> {
    let status = res.status();
    let body = res.text().await?;
    if !status.is_success() {
        return Err(format!("{what}: HTTP {status}: {body}").into());
    }
    Ok(serde_json::from_str(&body).map_err(|e| format!("{what}: {e}: {body}"))?)
}

/// Creates one chat of `participants` fresh agents: `normal` for two, else `group`.
pub async fn create_chat(
    client: &reqwest::Client,
    base: &str,
    admin_token: &str,
    participants: usize,
    n: usize,
) -> Result<Chat, BoxError> {
    let ids: Vec<Uuid> = (0..participants).map(|_| Uuid::new_v4()).collect();
    let kind = if participants == 2 { "normal" } else { "group" };
    let res = client
        .post(format!("{base}/chats"))
        .bearer_auth(admin_token)
        .json(&json!({
            "type": kind,
            "owner_id": ids[0],
            "participant_ids": ids,
            "name": format!("loadgen chat {n}"),
            "detail": format!("{participants} participants"),
        }))
        .send()
        .await?;
    let chat = json_of(res, "POST /chats").await?;
    let id = chat["id"]
        .as_str()
        .ok_or("POST /chats: no id in the answer")?
        .to_owned();
    Ok(Chat {
        id,
        participants: ids,
    })
}

/// The agent's chatroom of `chat_id`, from `GET /service_agents/chatrooms`.
pub async fn chatroom_of(
    client: &reqwest::Client,
    base: &str,
    agent_token: &str,
    chat_id: &str,
) -> Result<String, BoxError> {
    let res = client
        .get(format!("{base}/service_agents/chatrooms?page_size=100"))
        .bearer_auth(agent_token)
        .send()
        .await?;
    let list = json_of(res, "GET /service_agents/chatrooms").await?;
    list["result"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|room| room["chat_id"] == chat_id)
        .and_then(|room| room["id"].as_str())
        .map(str::to_owned)
        .ok_or_else(|| format!("no chatroom of chat {chat_id} for this agent").into())
}
