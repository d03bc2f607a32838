//! "Is typing" signals between gateway replicas: the gateway holding the typing agent's socket
//! publishes one to the typing exchange (routing key `chatroom_typing.<customer id>`), and every
//! gateway with sockets of the tenant pushes it to the other participants' sockets. Never
//! stored (no outbox: a lost signal is harmless, the next one or the lapse corrects it) and
//! never sent to webhooks.

use serde::{Deserialize, Serialize};

/// The routing key's first word.
pub const ROUTING_KIND: &str = "chatroom_typing";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TypingState {
    Start,
    Stop,
}

impl TypingState {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "start" => Some(TypingState::Start),
            "stop" => Some(TypingState::Stop),
            _ => None,
        }
    }
}

/// One signal, as published. Versioned (`v`): a field added later is a new version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypingSignal {
    pub v: u32,
    pub customer_id: String,
    pub chat_id: String,
    /// Who types.
    pub agent_id: String,
    pub state: TypingState,
    /// The chat's live chatrooms, `[id, owner_id]`: each other participant is told in its own.
    pub chatrooms: Vec<(String, String)>,
}

impl TypingSignal {
    pub const VERSION: u32 = 1;

    pub fn routing_key(&self) -> String {
        format!("{ROUTING_KIND}.{}", self.customer_id)
    }

    /// The frame a participant's socket gets for its chatroom `chatroom_id`.
    pub fn frame(&self, chatroom_id: &str) -> String {
        serde_json::json!({
            "type": ROUTING_KIND,
            "data": {
                "chat_id": self.chat_id,
                "chatroom_id": chatroom_id,
                "agent_id": self.agent_id,
                "state": self.state,
            }
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_round_trips_and_makes_each_rooms_frame() {
        let signal = TypingSignal {
            v: TypingSignal::VERSION,
            customer_id: "c".into(),
            chat_id: "chat".into(),
            agent_id: "a".into(),
            state: TypingState::Start,
            chatrooms: vec![("r1".into(), "a".into()), ("r2".into(), "b".into())],
        };
        let json = serde_json::to_string(&signal).unwrap();
        assert_eq!(
            json,
            r#"{"v":1,"customer_id":"c","chat_id":"chat","agent_id":"a","state":"start","chatrooms":[["r1","a"],["r2","b"]]}"#
        );
        assert_eq!(serde_json::from_str::<TypingSignal>(&json).unwrap(), signal);
        assert_eq!(signal.routing_key(), "chatroom_typing.c");
        let frame: serde_json::Value = serde_json::from_str(&signal.frame("r2")).unwrap();
        assert_eq!(
            frame,
            serde_json::json!({"type": "chatroom_typing", "data": {"chat_id": "chat", "chatroom_id": "r2", "agent_id": "a", "state": "start"}})
        );
        assert_eq!(TypingState::parse("stop"), Some(TypingState::Stop));
        assert_eq!(TypingState::parse("typing"), None);
    }
}
