//! The JSON shapes of the contract's resources, in the seed's field order. The gateway answers
//! with them and the services put them in their events' `data` (see the `events` crate's
//! contract), so REST clients and event subscribers see one shape.

use proto::chat::v1 as chat;
use proto::message::v1 as msg;
use serde::{Deserialize, Serialize};

pub fn chat_type_name(t: i32) -> &'static str {
    match chat::ChatType::try_from(t) {
        Ok(chat::ChatType::Normal) => "normal",
        Ok(chat::ChatType::Group) => "group",
        _ => "",
    }
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChatJson {
    pub id: String,
    pub customer_id: String,
    #[serde(rename = "type")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "normal"))]
    pub chat_type: String,
    pub owner_id: String,
    pub participant_ids: Vec<String>,
    pub name: String,
    pub detail: String,
    pub tm_create: String,
    pub tm_update: String,
    pub tm_delete: String,
}

impl From<chat::Chat> for ChatJson {
    fn from(c: chat::Chat) -> Self {
        ChatJson {
            chat_type: chat_type_name(c.r#type).to_owned(),
            id: c.id,
            customer_id: c.customer_id,
            owner_id: c.owner_id,
            participant_ids: c.participant_ids,
            name: c.name,
            detail: c.detail,
            tm_create: c.tm_create,
            tm_update: c.tm_update,
            tm_delete: c.tm_delete,
        }
    }
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChatroomJson {
    pub id: String,
    pub customer_id: String,
    #[serde(rename = "type")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "normal"))]
    pub chat_type: String,
    pub chat_id: String,
    pub owner_id: String,
    pub participant_ids: Vec<String>,
    pub name: String,
    pub detail: String,
    pub tm_create: String,
    pub tm_update: String,
    pub tm_delete: String,
}

impl From<chat::Chatroom> for ChatroomJson {
    fn from(c: chat::Chatroom) -> Self {
        ChatroomJson {
            chat_type: chat_type_name(c.r#type).to_owned(),
            id: c.id,
            customer_id: c.customer_id,
            chat_id: c.chat_id,
            owner_id: c.owner_id,
            participant_ids: c.participant_ids,
            name: c.name,
            detail: c.detail,
            tm_create: c.tm_create,
            tm_update: c.tm_update,
            tm_delete: c.tm_delete,
        }
    }
}

pub fn message_type_name(t: i32) -> &'static str {
    match msg::MessageType::try_from(t) {
        Ok(msg::MessageType::Normal) => "normal",
        Ok(msg::MessageType::System) => "system",
        _ => "",
    }
}

/// An address: missing strings are `""`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct AddressJson {
    #[serde(rename = "type")]
    pub address_type: String,
    pub target: String,
    pub target_name: String,
    pub name: String,
    pub detail: String,
}

impl From<msg::Address> for AddressJson {
    fn from(a: msg::Address) -> Self {
        AddressJson {
            address_type: a.r#type,
            target: a.target,
            target_name: a.target_name,
            name: a.name,
            detail: a.detail,
        }
    }
}

impl From<AddressJson> for msg::Address {
    fn from(a: AddressJson) -> Self {
        msg::Address {
            r#type: a.address_type,
            target: a.target,
            target_name: a.target_name,
            name: a.name,
            detail: a.detail,
        }
    }
}

/// The agent of an `agent` media: only its id is kept.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AgentRefJson {
    pub id: String,
}

/// A media carries only the field of its type.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum MediaJson {
    Address { address: AddressJson },
    Agent { agent: AgentRefJson },
    File { file_id: String },
    Link { link_url: String },
}

impl From<msg::Media> for MediaJson {
    fn from(m: msg::Media) -> Self {
        use msg::media::Kind;
        match m.kind {
            Some(Kind::Address(a)) => MediaJson::Address { address: a.into() },
            Some(Kind::AgentId(id)) => MediaJson::Agent {
                agent: AgentRefJson { id },
            },
            Some(Kind::FileId(file_id)) => MediaJson::File { file_id },
            Some(Kind::LinkUrl(link_url)) => MediaJson::Link { link_url },
            None => MediaJson::Link {
                link_url: String::new(),
            },
        }
    }
}

impl From<MediaJson> for msg::Media {
    fn from(m: MediaJson) -> Self {
        use msg::media::Kind;
        msg::Media {
            kind: Some(match m {
                MediaJson::Address { address } => Kind::Address(address.into()),
                MediaJson::Agent { agent } => Kind::AgentId(agent.id),
                MediaJson::File { file_id } => Kind::FileId(file_id),
                MediaJson::Link { link_url } => Kind::LinkUrl(link_url),
            }),
        }
    }
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChatmessageJson {
    pub id: String,
    pub customer_id: String,
    pub chat_id: String,
    pub source: AddressJson,
    #[serde(rename = "type")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "normal"))]
    pub message_type: String,
    pub text: String,
    pub medias: Vec<MediaJson>,
    pub tm_create: String,
    pub tm_update: String,
    pub tm_delete: String,
}

impl From<msg::Chatmessage> for ChatmessageJson {
    fn from(m: msg::Chatmessage) -> Self {
        ChatmessageJson {
            message_type: message_type_name(m.r#type).to_owned(),
            id: m.id,
            customer_id: m.customer_id,
            chat_id: m.chat_id,
            source: m.source.unwrap_or_default().into(),
            text: m.text,
            medias: m.medias.into_iter().map(MediaJson::from).collect(),
            tm_create: m.tm_create,
            tm_update: m.tm_update,
            tm_delete: m.tm_delete,
        }
    }
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChatroommessageJson {
    pub id: String,
    pub customer_id: String,
    pub chatroom_id: String,
    pub messagechat_id: String,
    pub source: AddressJson,
    #[serde(rename = "type")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "normal"))]
    pub message_type: String,
    pub text: String,
    pub medias: Vec<MediaJson>,
    pub tm_create: String,
    pub tm_update: String,
    pub tm_delete: String,
}

impl From<msg::Chatroommessage> for ChatroommessageJson {
    fn from(m: msg::Chatroommessage) -> Self {
        ChatroommessageJson {
            message_type: message_type_name(m.r#type).to_owned(),
            id: m.id,
            customer_id: m.customer_id,
            chatroom_id: m.chatroom_id,
            messagechat_id: m.messagechat_id,
            source: m.source.unwrap_or_default().into(),
            text: m.text,
            medias: m.medias.into_iter().map(MediaJson::from).collect(),
            tm_create: m.tm_create,
            tm_update: m.tm_update,
            tm_delete: m.tm_delete,
        }
    }
}

/// A chatroom's read state: how far its owner has read in its chat. `last_read_messagechat_id`
/// and `tm_last_read` are `""` before the first read, and so is `tm_update`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReadStateJson {
    pub chatroom_id: String,
    pub customer_id: String,
    pub chat_id: String,
    pub owner_id: String,
    pub last_read_messagechat_id: String,
    pub tm_last_read: String,
    /// The room's live copies after the read point that its owner did not send.
    pub unread_count: i64,
    pub tm_update: String,
}

impl From<msg::ReadState> for ReadStateJson {
    fn from(r: msg::ReadState) -> Self {
        ReadStateJson {
            chatroom_id: r.chatroom_id,
            customer_id: r.customer_id,
            chat_id: r.chat_id,
            owner_id: r.owner_id,
            last_read_messagechat_id: r.last_read_messagechat_id,
            tm_last_read: r.tm_last_read,
            unread_count: r.unread_count,
            tm_update: r.tm_update,
        }
    }
}

/// A page of a list, as the seed shows it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ListJson<T> {
    pub result: Vec<T>,
    pub next_page_token: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medias_carry_only_the_field_of_their_type() {
        let medias = vec![
            MediaJson::Link {
                link_url: "https://example.com/a".into(),
            },
            MediaJson::Agent {
                agent: AgentRefJson { id: "a1".into() },
            },
            MediaJson::File {
                file_id: "f1".into(),
            },
        ];
        let text = serde_json::to_string(&medias).unwrap();
        assert_eq!(
            text,
            r#"[{"type":"link","link_url":"https://example.com/a"},{"type":"agent","agent":{"id":"a1"}},{"type":"file","file_id":"f1"}]"#
        );
        let back: Vec<MediaJson> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, medias);
        let roundtrip: Vec<MediaJson> = medias
            .iter()
            .cloned()
            .map(msg::Media::from)
            .map(MediaJson::from)
            .collect();
        assert_eq!(roundtrip, medias);
        assert!(serde_json::from_str::<MediaJson>(r#"{"type":"link"}"#).is_err());
        assert!(serde_json::from_str::<MediaJson>(r#"{"type":"video","link_url":"x"}"#).is_err());
    }

    #[test]
    fn missing_address_strings_are_empty() {
        let a: AddressJson = serde_json::from_str(r#"{"type":"agent","target":"t"}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"{"type":"agent","target":"t","target_name":"","name":"","detail":""}"#
        );
    }

    #[test]
    fn chat_json_has_the_seed_field_order() {
        let json = serde_json::to_string(&ChatJson::from(chat::Chat {
            id: "i".into(),
            customer_id: "c".into(),
            r#type: chat::ChatType::Normal as i32,
            owner_id: "o".into(),
            participant_ids: vec!["a".into(), "b".into()],
            name: "n".into(),
            detail: "d".into(),
            tm_create: "t1".into(),
            tm_update: "t2".into(),
            tm_delete: "t3".into(),
        }))
        .unwrap();
        assert_eq!(
            json,
            r#"{"id":"i","customer_id":"c","type":"normal","owner_id":"o","participant_ids":["a","b"],"name":"n","detail":"d","tm_create":"t1","tm_update":"t2","tm_delete":"t3"}"#
        );
    }

    #[test]
    fn chatroom_json_has_the_seed_field_order() {
        let json = serde_json::to_value(ChatroomJson::from(chat::Chatroom {
            r#type: chat::ChatType::Group as i32,
            ..Default::default()
        }))
        .unwrap();
        let keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
        assert_eq!(json["type"], "group");
        // serde_json's map is sorted unless preserve_order is on: compare the serialized text.
        let text = serde_json::to_string(&ChatroomJson::from(chat::Chatroom::default())).unwrap();
        let order = [
            "id",
            "customer_id",
            "type",
            "chat_id",
            "owner_id",
            "participant_ids",
            "name",
            "detail",
            "tm_create",
            "tm_update",
            "tm_delete",
        ];
        let positions: Vec<_> = order
            .iter()
            .map(|k| text.find(&format!("\"{k}\"")).unwrap())
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert_eq!(keys.len(), order.len());
    }
}
