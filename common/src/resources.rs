//! The JSON shapes of the contract's resources, in the seed's field order. The gateway answers
//! with them and the services put them in their events' `data`, so REST clients and event
//! subscribers see one shape.

use proto::chat::v1 as chat;
use serde::Serialize;

pub fn chat_type_name(t: i32) -> &'static str {
    match chat::ChatType::try_from(t) {
        Ok(chat::ChatType::Normal) => "normal",
        Ok(chat::ChatType::Group) => "group",
        _ => "",
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChatJson {
    pub id: String,
    pub customer_id: String,
    #[serde(rename = "type")]
    pub chat_type: &'static str,
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
            chat_type: chat_type_name(c.r#type),
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

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChatroomJson {
    pub id: String,
    pub customer_id: String,
    #[serde(rename = "type")]
    pub chat_type: &'static str,
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
            chat_type: chat_type_name(c.r#type),
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

/// A page of a list, as the seed shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ListJson<T> {
    pub result: Vec<T>,
    pub next_page_token: String,
}

#[cfg(test)]
mod tests {
    use super::*;

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
