//! Subscription topics, VoIPbin style: `customer_id:<id>:<resource>[:<id>]` (an admin or
//! manager of that customer) or `agent_id:<id>:<resource>[:<id>]` (only that agent, and only
//! `chatroom` and `messagechatroom`, of chatrooms the agent owns). A narrowing id must name
//! something the caller may see: a chat or chatroom of the tenant, or for agent topics a
//! chatroom the agent owns.

use common::grpc_client::ChatClient;
use proto::chat::v1 as pb;

use crate::app::RequestId;
use crate::auth::Caller;
use crate::error::ApiError;
use pipeline::contract::Item;

pub use pipeline::contract::Resource;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    Customer(String),
    Agent(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic {
    pub audience: Audience,
    pub resource: Resource,
    /// Narrows it: the chat (chat, messagechat) or the chatroom (chatroom, messagechatroom).
    pub id: Option<String>,
}

/// Why a topic was refused: the error code and a message.
pub type Refusal = (&'static str, String);

/// What a topic's narrowing id names, and whose it must be for the caller to see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Narrowing<'a> {
    /// A chat of the tenant (`chat`, `messagechat`).
    Chat(&'a str),
    /// A chatroom of the tenant (`chatroom`, `messagechatroom`), owned by `owner` when set
    /// (agent topics).
    Chatroom { id: &'a str, owner: Option<&'a str> },
}

fn uuid(s: &str) -> Option<String> {
    uuid::Uuid::parse_str(s)
        .ok()
        .map(|u| u.hyphenated().to_string())
}

impl Topic {
    pub fn parse(text: &str) -> Result<Topic, Refusal> {
        let bad = |why: &str| ("invalid_argument", format!("topic {text:?}: {why}"));
        let parts: Vec<&str> = text.split(':').collect();
        if !(3..=4).contains(&parts.len()) {
            return Err(bad(
                "expected customer_id:<id>:<resource>[:<id>] or agent_id:<id>:<resource>[:<id>]",
            ));
        }
        let owner = uuid(parts[1]).ok_or_else(|| bad("not a valid UUID after the prefix"))?;
        let audience = match parts[0] {
            "customer_id" => Audience::Customer(owner),
            "agent_id" => Audience::Agent(owner),
            _ => return Err(bad("must start with customer_id: or agent_id:")),
        };
        let resource = Resource::parse(parts[2]).ok_or_else(|| {
            bad("resource must be chat, chatroom, messagechat or messagechatroom")
        })?;
        let id = match parts.get(3) {
            None => None,
            Some(s) => Some(uuid(s).ok_or_else(|| bad("the narrowing id is not a valid UUID"))?),
        };
        if matches!(audience, Audience::Agent(_))
            && matches!(resource, Resource::Chat | Resource::Messagechat)
        {
            return Err(bad("agent topics carry only chatroom and messagechatroom"));
        }
        Ok(Topic {
            audience,
            resource,
            id,
        })
    }

    /// Whether `caller` may see this topic. Refused topics are never kept.
    pub fn authorize(&self, text: &str, caller: &Caller) -> Result<(), Refusal> {
        let allowed = match &self.audience {
            Audience::Customer(c) => {
                caller.is_customer_manager() && *c == caller.customer_id.to_string()
            }
            Audience::Agent(a) => caller
                .agent
                .as_ref()
                .is_some_and(|me| *a == me.id.to_string()),
        };
        if allowed {
            Ok(())
        } else {
            Err((
                "permission_denied",
                format!("topic {text:?}: not allowed for this token"),
            ))
        }
    }

    /// What the narrowing id must name; None for a topic without one.
    pub fn narrowing(&self) -> Option<Narrowing<'_>> {
        let id = self.id.as_deref()?;
        let owner = match &self.audience {
            Audience::Customer(_) => None,
            Audience::Agent(agent) => Some(agent.as_str()),
        };
        Some(match self.resource {
            Resource::Chat | Resource::Messagechat => Narrowing::Chat(id),
            Resource::Chatroom | Resource::Messagechatroom => Narrowing::Chatroom { id, owner },
        })
    }

    /// Whether the narrowing id names something the caller may see, asking chat-manager (the
    /// events carry no membership to check later). What it cannot find in the tenant (or
    /// among the agent's own chatrooms) is `not_found`, never saying whether it exists
    /// elsewhere; a service that cannot answer is `unavailable`. Call after `authorize`.
    pub async fn check_visible(
        &self,
        text: &str,
        customer_id: &str,
        chat: &ChatClient,
        request: &RequestId,
    ) -> Result<(), Refusal> {
        let Some(narrowing) = self.narrowing() else {
            return Ok(());
        };
        let mut chat = chat.clone();
        let (found, missing) = match narrowing {
            Narrowing::Chat(id) => {
                let req = pb::GetChatRequest {
                    customer_id: customer_id.to_owned(),
                    id: id.to_owned(),
                };
                (
                    chat.get_chat(request.grpc(req)).await.map(drop),
                    format!("no chat {id} in this tenant"),
                )
            }
            Narrowing::Chatroom { id, owner } => {
                let req = pb::GetChatroomRequest {
                    customer_id: customer_id.to_owned(),
                    id: id.to_owned(),
                    owner_id: owner.map(str::to_owned),
                };
                let missing = match owner {
                    None => format!("no chatroom {id} in this tenant"),
                    Some(agent) => format!("no chatroom {id} owned by agent {agent}"),
                };
                (
                    chat.get_chatroom(request.grpc(req)).await.map(drop),
                    missing,
                )
            }
        };
        found.map_err(|status| match ApiError::from(status) {
            ApiError::NotFound(_) => ("not_found", format!("topic {text:?}: {missing}")),
            other => (other.code(), format!("topic {text:?}: {other}")),
        })
    }

    /// Whether an item of an event of the subscriber's tenant belongs to this topic (the hub
    /// offers a socket only its own tenant's events).
    pub fn matches(&self, item: &Item<'_>) -> bool {
        if item.event_type.resource != self.resource {
            return false;
        }
        // Another participant's read state reaches agents only, on their own room's topics.
        if item.peer && matches!(self.audience, Audience::Customer(_)) {
            return false;
        }
        if let Audience::Agent(agent) = &self.audience
            && item.owner_id != Some(agent.as_str())
        {
            return false;
        }
        match &self.id {
            None => true,
            Some(id) => item.scope_id == id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AgentIdentity;

    const C: &str = "5e4a0680-804e-11ec-8477-2fea5968d85b";
    const A: &str = "eb1ac5c0-ff63-47e2-bcdb-5da9c336eb4b";
    const X: &str = "47fe0b7c-7333-46cf-8b23-61e14e62490a";

    fn caller(permission: u64, agent: Option<&str>) -> Caller {
        Caller {
            customer_id: C.parse().unwrap(),
            agent: agent.map(|a| AgentIdentity {
                id: a.parse().unwrap(),
                name: String::new(),
                username: String::new(),
            }),
            permission,
            expires_at: 0,
        }
    }

    fn item<'a>(resource: Resource, owner: Option<&'a str>, scope_id: &'a str) -> Item<'a> {
        use pipeline::contract::{Action, EventType};
        Item {
            event_type: EventType::new(resource, Action::Created),
            id: "i",
            scope_id,
            owner_id: owner,
            peer: false,
        }
    }

    #[test]
    fn parses_both_audiences_and_refuses_junk() {
        let t = Topic::parse(&format!("customer_id:{C}:messagechat:{X}")).unwrap();
        assert_eq!(t.audience, Audience::Customer(C.into()));
        assert_eq!(t.resource, Resource::Messagechat);
        assert_eq!(t.id.as_deref(), Some(X));
        assert!(Topic::parse(&format!("agent_id:{A}:chatroom")).is_ok());
        for junk in [
            "",
            "customer_id",
            "customer_id:x:chat",
            &format!("customer_id:{C}:call"),
            &format!("user_id:{C}:chat"),
            &format!("customer_id:{C}:chat:nope"),
            &format!("agent_id:{A}:chat"),
            &format!("customer_id:{C}:chat:{X}:more"),
        ] {
            assert_eq!(
                Topic::parse(junk).unwrap_err().0,
                "invalid_argument",
                "{junk}"
            );
        }
    }

    #[test]
    fn only_the_right_callers_may_subscribe() {
        let customer = Topic::parse(&format!("customer_id:{C}:chat")).unwrap();
        assert!(customer.authorize("t", &caller(0x20, None)).is_ok());
        assert!(customer.authorize("t", &caller(0x40, Some(A))).is_ok());
        assert_eq!(
            customer
                .authorize("t", &caller(0x10, Some(A)))
                .unwrap_err()
                .0,
            "permission_denied"
        );
        let other = Topic::parse(&format!("customer_id:{X}:chat")).unwrap();
        assert!(
            other.authorize("t", &caller(0x01, None)).is_err(),
            "no cross-tenant access"
        );
        let agent = Topic::parse(&format!("agent_id:{A}:chatroom")).unwrap();
        assert!(agent.authorize("t", &caller(0x10, Some(A))).is_ok());
        assert!(agent.authorize("t", &caller(0x10, Some(X))).is_err());
        assert!(agent.authorize("t", &caller(0x20, None)).is_err());
    }

    #[test]
    fn a_narrowing_id_names_a_chat_or_a_chatroom_of_the_audience() {
        let parse = |t: String| Topic::parse(&t).unwrap();
        assert_eq!(parse(format!("customer_id:{C}:chat")).narrowing(), None);
        assert_eq!(
            parse(format!("customer_id:{C}:chat:{X}")).narrowing(),
            Some(Narrowing::Chat(X))
        );
        assert_eq!(
            parse(format!("customer_id:{C}:messagechat:{X}")).narrowing(),
            Some(Narrowing::Chat(X))
        );
        assert_eq!(
            parse(format!("customer_id:{C}:messagechatroom:{X}")).narrowing(),
            Some(Narrowing::Chatroom { id: X, owner: None })
        );
        assert_eq!(
            parse(format!("agent_id:{A}:chatroom:{X}")).narrowing(),
            Some(Narrowing::Chatroom {
                id: X,
                owner: Some(A)
            })
        );
        assert_eq!(
            parse(format!("agent_id:{A}:messagechatroom:{X}")).narrowing(),
            Some(Narrowing::Chatroom {
                id: X,
                owner: Some(A)
            })
        );
    }

    #[test]
    fn items_match_by_resource_owner_and_id() {
        let all_rooms = Topic::parse(&format!("customer_id:{C}:chatroom")).unwrap();
        // Another participant's read state: on its own agent topics only.
        let peer = Item {
            peer: true,
            ..item(Resource::Chatroom, Some(A), X)
        };
        assert!(!all_rooms.matches(&peer));
        let a_rooms = Topic::parse(&format!("agent_id:{A}:chatroom:{X}")).unwrap();
        assert!(a_rooms.matches(&peer));
        assert!(all_rooms.matches(&item(Resource::Chatroom, Some(X), X)));
        assert!(!all_rooms.matches(&item(Resource::Chat, None, X)));
        let mine = Topic::parse(&format!("agent_id:{A}:messagechatroom")).unwrap();
        assert!(mine.matches(&item(Resource::Messagechatroom, Some(A), X)));
        assert!(
            !mine.matches(&item(Resource::Messagechatroom, Some(X), X)),
            "another agent's room"
        );
        let one = Topic::parse(&format!("customer_id:{C}:messagechat:{X}")).unwrap();
        assert!(one.matches(&item(Resource::Messagechat, None, X)));
        assert!(!one.matches(&item(Resource::Messagechat, None, A)));
    }
}
