//! Chats: the rules and transactions. Every change returns the events it implies; `ChatManager`
//! writes them to the outbox in the same transaction.

use common::db::DbConnection;
use common::page::Page;
use common::time;
use pipeline::contract::Action;
use proto::chat::v1 as pb;

use crate::chatrooms;
use crate::db::models::{ChatRow, ChatroomRow, ChatroomView, encode_ids};
use crate::db::queries;
use crate::error::{ChatError, check_text};
use crate::events::{ChatRecord, RoomChanges, chat_event};

/// Most participants a chat may have.
pub const MAX_PARTICIPANTS: usize = 1_000;
/// Longest `name`, in characters.
pub const MAX_NAME_CHARS: usize = 1_000;
/// Longest `detail`, in characters.
pub const MAX_DETAIL_CHARS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatType {
    Normal,
    Group,
}

impl ChatType {
    pub fn as_str(self) -> &'static str {
        match self {
            ChatType::Normal => "normal",
            ChatType::Group => "group",
        }
    }

    pub fn from_db(s: &str) -> ChatType {
        if s == "normal" {
            ChatType::Normal
        } else {
            ChatType::Group
        }
    }

    pub fn to_proto(self) -> pb::ChatType {
        match self {
            ChatType::Normal => pb::ChatType::Normal,
            ChatType::Group => pb::ChatType::Group,
        }
    }
}

/// A change and the records of the events it implies.
pub type Change<T> = pipeline::Change<T, ChatRecord>;

#[derive(Debug, Clone)]
pub struct NewChat {
    pub customer_id: String,
    pub chat_type: ChatType,
    pub owner_id: String,
    /// Validated UUIDs, in any order, possibly repeated.
    pub participant_ids: Vec<String>,
    pub name: String,
    pub detail: String,
}

pub fn to_proto(row: &ChatRow) -> pb::Chat {
    pb::Chat {
        id: row.id.clone(),
        customer_id: row.customer_id.clone(),
        r#type: ChatType::from_db(&row.chat_type).to_proto() as i32,
        owner_id: row.owner_id.clone(),
        participant_ids: row.participants(),
        name: row.name.clone(),
        detail: row.detail.clone(),
        tm_create: time::format(row.tm_create),
        tm_update: time::format(row.tm_update),
        tm_delete: time::format(row.tm_delete),
    }
}

pub(crate) fn normal_pair(chat_type: ChatType, participants: &[String]) -> Option<String> {
    (chat_type == ChatType::Normal).then(|| participants.join(","))
}

/// Sorted and without duplicates, as the contract returns them.
pub(crate) fn normalise(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids.dedup();
    ids
}

/// The participant rules of the contract, checked before anything is written.
pub fn check_participants(
    chat_type: ChatType,
    owner_id: &str,
    participants: &[String],
) -> Result<(), ChatError> {
    match chat_type {
        ChatType::Normal if participants.len() != 2 => {
            return Err(ChatError::invalid(
                "participant_ids: a normal chat needs exactly two distinct participants",
            ));
        }
        ChatType::Group if participants.len() < 2 => {
            return Err(ChatError::invalid(
                "participant_ids: a group chat needs at least two distinct participants",
            ));
        }
        _ => {}
    }
    if participants.len() > MAX_PARTICIPANTS {
        return Err(ChatError::invalid(format!(
            "participant_ids: at most {MAX_PARTICIPANTS} participants"
        )));
    }
    if !participants.iter().any(|p| p == owner_id) {
        return Err(ChatError::invalid(
            "owner_id: must be one of the participant_ids",
        ));
    }
    Ok(())
}

pub fn check_name_detail(name: Option<&str>, detail: Option<&str>) -> Result<(), ChatError> {
    if let Some(name) = name {
        check_text("name", name, MAX_NAME_CHARS)?;
    }
    if let Some(detail) = detail {
        check_text("detail", detail, MAX_DETAIL_CHARS)?;
    }
    Ok(())
}

/// Creates the chat and one chatroom per participant.
pub fn create(conn: &mut DbConnection, new: NewChat) -> Result<Change<ChatRow>, ChatError> {
    let participants = normalise(new.participant_ids);
    check_participants(new.chat_type, &new.owner_id, &participants)?;
    check_name_detail(Some(&new.name), Some(&new.detail))?;

    let now = time::now();
    let chat = ChatRow {
        id: uuid::Uuid::new_v4().to_string(),
        customer_id: new.customer_id,
        chat_type: new.chat_type.as_str().to_owned(),
        owner_id: new.owner_id,
        participant_ids: encode_ids(&participants),
        name: new.name,
        detail: new.detail,
        normal_pair: normal_pair(new.chat_type, &participants),
        tm_create: now,
        tm_update: now,
        tm_delete: time::live(),
    };
    queries::insert_chat(conn, &chat).map_err(|e| conflict_on_pair(e, &chat))?;

    let rooms: Vec<ChatroomRow> = participants
        .iter()
        .map(|p| chatrooms::new_row(&chat, p, now))
        .collect();
    queries::insert_chatrooms(conn, &rooms)?;

    let event = chat_event(
        Action::Created,
        &chat,
        RoomChanges {
            created: &rooms,
            ..RoomChanges::default()
        },
    );
    Ok((chat, vec![event]))
}

fn conflict_on_pair(e: diesel::result::Error, chat: &ChatRow) -> ChatError {
    let unique = matches!(
        e,
        diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)
    );
    if unique && chat.normal_pair.is_some() {
        ChatError::Conflict(
            "participant_ids: a normal chat between these participants already exists".into(),
        )
    } else {
        e.into()
    }
}

pub fn get(conn: &mut DbConnection, customer_id: &str, id: &str) -> Result<ChatRow, ChatError> {
    queries::find_chat(conn, customer_id, id)?.ok_or_else(|| ChatError::not_found("chat"))
}

/// A live chat, for changes: a deleted chat cannot be changed.
fn get_live(conn: &mut DbConnection, customer_id: &str, id: &str) -> Result<ChatRow, ChatError> {
    let chat = get(conn, customer_id, id)?;
    if chat.tm_delete != time::live() {
        return Err(ChatError::not_found("chat"));
    }
    Ok(chat)
}

/// The chat (live or deleted) with its live chatrooms.
pub fn members(
    conn: &mut DbConnection,
    customer_id: &str,
    id: &str,
) -> Result<(ChatRow, Vec<ChatroomView>), ChatError> {
    let chat = get(conn, customer_id, id)?;
    let rooms = chatrooms::views(queries::live_rooms_of_chat(conn, &chat.id)?, &chat);
    Ok((chat, rooms))
}

pub fn list(
    conn: &mut DbConnection,
    customer_id: &str,
    page: &Page,
) -> Result<(Vec<ChatRow>, String), ChatError> {
    let rows = queries::list_chats(conn, customer_id, page)?;
    Ok(page.finish(rows, |r| (r.tm_create, r.id.clone())))
}

pub fn update(
    conn: &mut DbConnection,
    customer_id: &str,
    id: &str,
    name: Option<String>,
    detail: Option<String>,
) -> Result<Change<ChatRow>, ChatError> {
    check_name_detail(name.as_deref(), detail.as_deref())?;
    let mut chat = get_live(conn, customer_id, id)?;
    if let Some(name) = name {
        chat.name = name;
    }
    if let Some(detail) = detail {
        chat.detail = detail;
    }
    chat.tm_update = time::now();
    queries::save_chat(conn, &chat)?;
    let events = vec![chat_event(Action::Updated, &chat, RoomChanges::default())];
    Ok((chat, events))
}

/// Deletes the chat and its live chatrooms.
pub fn delete(
    conn: &mut DbConnection,
    customer_id: &str,
    id: &str,
) -> Result<Change<ChatRow>, ChatError> {
    let mut chat = get_live(conn, customer_id, id)?;
    let now = time::now();
    chat.tm_update = now;
    chat.tm_delete = now;
    // Frees the pair for a new normal chat.
    chat.normal_pair = None;
    queries::save_chat(conn, &chat)?;

    let rooms = queries::live_rooms_of_chat(conn, &chat.id)?;
    let ids: Vec<String> = rooms.iter().map(|r| r.id.clone()).collect();
    queries::delete_rooms(conn, &ids, now)?;

    // The event's chatroom items take their times from the chat (see `events::item`).
    let event = chat_event(
        Action::Deleted,
        &chat,
        RoomChanges {
            deleted: &rooms,
            ..RoomChanges::default()
        },
    );
    Ok((chat, vec![event]))
}

pub fn change_owner(
    conn: &mut DbConnection,
    customer_id: &str,
    id: &str,
    owner_id: String,
) -> Result<Change<ChatRow>, ChatError> {
    let mut chat = get_live(conn, customer_id, id)?;
    if !chat.participants().contains(&owner_id) {
        return Err(ChatError::invalid(
            "owner_id: must be one of the participant_ids",
        ));
    }
    chat.owner_id = owner_id;
    chat.tm_update = time::now();
    queries::save_chat(conn, &chat)?;
    let events = vec![chat_event(Action::Updated, &chat, RoomChanges::default())];
    Ok((chat, events))
}

/// Adds a participant to a group chat: a chatroom for them, and the new participant list on
/// the chat and on every live chatroom of it.
pub fn add_participant(
    conn: &mut DbConnection,
    customer_id: &str,
    id: &str,
    participant_id: String,
) -> Result<Change<ChatRow>, ChatError> {
    let mut chat = get_live(conn, customer_id, id)?;
    if ChatType::from_db(&chat.chat_type) == ChatType::Normal {
        return Err(ChatError::invalid(
            "participant_id: a normal chat stays between its two participants",
        ));
    }
    let mut participants = chat.participants();
    if participants.contains(&participant_id) {
        return Err(ChatError::invalid(
            "participant_id: already a participant of this chat",
        ));
    }
    participants.push(participant_id.clone());
    let participants = normalise(participants);
    if participants.len() > MAX_PARTICIPANTS {
        return Err(ChatError::invalid(format!(
            "participant_id: a chat has at most {MAX_PARTICIPANTS} participants"
        )));
    }
    let now = time::now();
    chat.participant_ids = encode_ids(&participants);
    chat.tm_update = now;
    queries::save_chat(conn, &chat)?;

    let others = queries::live_rooms_of_chat(conn, &chat.id)?;
    let other_ids: Vec<String> = others.iter().map(|r| r.id.clone()).collect();
    queries::touch_rooms(conn, &other_ids, now)?;
    let room = chatrooms::new_row(&chat, &participant_id, now);
    queries::insert_chatrooms(conn, std::slice::from_ref(&room))?;

    let event = chat_event(
        Action::Updated,
        &chat,
        RoomChanges {
            created: std::slice::from_ref(&room),
            updated: &others,
            ..RoomChanges::default()
        },
    );
    Ok((chat, vec![event]))
}

/// Removes a participant from a group chat: deletes their chatroom and updates the rest.
pub fn remove_participant(
    conn: &mut DbConnection,
    customer_id: &str,
    id: &str,
    participant_id: &str,
) -> Result<Change<ChatRow>, ChatError> {
    let mut chat = get_live(conn, customer_id, id)?;
    if ChatType::from_db(&chat.chat_type) == ChatType::Normal {
        return Err(ChatError::invalid(
            "participant_id: a normal chat stays between its two participants",
        ));
    }
    let mut participants = chat.participants();
    let Some(pos) = participants.iter().position(|p| p == participant_id) else {
        return Err(ChatError::not_found("participant"));
    };
    if chat.owner_id == participant_id {
        return Err(ChatError::invalid(
            "participant_id: the owner cannot be removed; move ownership first",
        ));
    }
    if participants.len() <= 2 {
        return Err(ChatError::invalid(
            "participant_id: a group chat keeps at least two participants",
        ));
    }
    participants.remove(pos);
    let now = time::now();
    chat.participant_ids = encode_ids(&participants);
    chat.tm_update = now;
    queries::save_chat(conn, &chat)?;

    let rooms = queries::live_rooms_of_chat(conn, &chat.id)?;
    let (gone, kept): (Vec<_>, Vec<_>) = rooms
        .into_iter()
        .partition(|r| r.owner_id == participant_id);
    let gone_ids: Vec<String> = gone.iter().map(|r| r.id.clone()).collect();
    let kept_ids: Vec<String> = kept.iter().map(|r| r.id.clone()).collect();
    queries::delete_rooms(conn, &gone_ids, now)?;
    queries::touch_rooms(conn, &kept_ids, now)?;

    let event = chat_event(
        Action::Updated,
        &chat,
        RoomChanges {
            updated: &kept,
            deleted: &gone,
            ..RoomChanges::default()
        },
    );
    Ok((chat, vec![event]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn normal_chats_need_exactly_two_distinct_participants() {
        assert!(check_participants(ChatType::Normal, "a", &ids(&["a", "b"])).is_ok());
        let err =
            check_participants(ChatType::Normal, "a", &normalise(ids(&["a", "a"]))).unwrap_err();
        assert!(err.to_string().starts_with("participant_ids:"), "{err}");
        assert!(check_participants(ChatType::Normal, "a", &ids(&["a", "b", "c"])).is_err());
    }

    #[test]
    fn group_chats_need_two_or_more() {
        assert!(check_participants(ChatType::Group, "a", &ids(&["a", "b", "c"])).is_ok());
        assert!(check_participants(ChatType::Group, "a", &ids(&["a"])).is_err());
    }

    #[test]
    fn the_owner_must_participate() {
        let err = check_participants(ChatType::Group, "z", &ids(&["a", "b"])).unwrap_err();
        assert!(err.to_string().starts_with("owner_id:"), "{err}");
    }

    #[test]
    fn participant_cap_is_enforced() {
        let many: Vec<String> = (0..=MAX_PARTICIPANTS).map(|i| format!("{i:05}")).collect();
        let err = check_participants(ChatType::Group, "00000", &many).unwrap_err();
        assert!(err.to_string().contains("at most"), "{err}");
        assert!(check_participants(ChatType::Group, "00000", &many[..MAX_PARTICIPANTS]).is_ok());
    }

    #[test]
    fn participants_are_sorted_and_deduplicated() {
        assert_eq!(normalise(ids(&["b", "a", "b"])), ids(&["a", "b"]));
    }

    #[test]
    fn normal_pair_only_for_normal_chats() {
        assert_eq!(
            normal_pair(ChatType::Normal, &ids(&["a", "b"])).as_deref(),
            Some("a,b")
        );
        assert_eq!(normal_pair(ChatType::Group, &ids(&["a", "b"])), None);
    }

    #[test]
    fn text_with_nul_is_refused() {
        let err = check_name_detail(Some("a\0b"), None).unwrap_err();
        assert!(err.to_string().starts_with("name:"), "{err}");
    }
}
