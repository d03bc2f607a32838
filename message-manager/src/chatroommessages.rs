//! Chatroommessages: each chatroom's copy of a chatmessage. A copy is not a row of its own: a
//! room holds a copy of every message its chat received while the room was live (the
//! contract's fan-out), so copies are derived from the messages and the membership view, and
//! only a copy deleted on its own is written down (`chatroommessage_deletions`). A send thus
//! writes one row whatever the size of the chat.
//!
//! A copy's id packs the numbers of its room and its message (`CopyKey`), so the copy is found
//! from its id alone, and within a room copy ids sort as their messages' ids do (the lists'
//! tie-breaker).

use chrono::NaiveDateTime;
use common::db::DbConnection;
use common::page::Page;
use common::time;
use pipeline::contract::Action;
use proto::message::v1 as pb;
use uuid::Uuid;

use crate::chatmessages::{Change, MessageType};
use crate::content;
use crate::db::models::{ChatmessageRow, MemberChatroom};
use crate::db::queries;
use crate::error::MessageError;
use crate::events::MessageRecord;

/// Bits of a message number (and of a room number).
const NO_BITS: u32 = 60;
const NO_MASK: u128 = (1 << NO_BITS) - 1;

/// A message's number: the leading 60 bits of its (version 4) id, leaving out the version
/// nibble. Numbers sort as the ids do; the table's primary key keeps them unique.
pub fn message_no(id: &Uuid) -> i64 {
    let v = id.as_u128();
    let high = v >> 80; // 48 bits before the version nibble
    let low = (v >> 64) & 0xFFF; // 12 bits after it
    ((high << 12) | low) as i64
}

/// Which copy an id names: its room's number (`member_chatrooms.no`) and its message's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CopyKey {
    pub room_no: i64,
    pub message_no: i64,
}

impl CopyKey {
    pub fn of(room: &MemberChatroom, message: &ChatmessageRow) -> Self {
        CopyKey {
            room_no: room.no,
            message_no: message.no,
        }
    }

    /// The copy's id: a version 8 (custom) UUID of the room's number (60 bits, around the
    /// version nibble) and the message's number (the low 60 bits, after the variant and two
    /// zero bits).
    pub fn id(self) -> Uuid {
        let room = self.room_no as u128 & NO_MASK;
        let message = self.message_no as u128 & NO_MASK;
        Uuid::from_u128(
            ((room >> 12) << 80) | (0x8 << 76) | ((room & 0xFFF) << 64) | (0b10 << 62) | message,
        )
    }

    /// The key of an id made by `id`; None for any other UUID.
    pub fn parse(id: &Uuid) -> Option<Self> {
        let v = id.as_u128();
        if (v >> 76) & 0xF != 0x8 || (v >> 60) & 0xF != 0b1000 {
            return None;
        }
        let room = ((v >> 80) << 12) | ((v >> 64) & 0xFFF);
        Some(CopyKey {
            room_no: room as i64,
            message_no: (v & NO_MASK) as i64,
        })
    }
}

/// The copy of `message` in `room` (which must hold one: `MemberChatroom::holds_copy_of`). It
/// ends with the message, with the room, or when deleted on its own, whichever came first.
pub fn to_proto(
    message: &ChatmessageRow,
    room: &MemberChatroom,
    deleted_on_its_own: Option<NaiveDateTime>,
) -> pb::Chatroommessage {
    let ended = [
        Some(message.tm_delete),
        Some(room.tm_delete),
        deleted_on_its_own,
    ]
    .into_iter()
    .flatten()
    .min()
    .expect("the message's own tm_delete");
    let updated = if ended == time::live() {
        message.tm_update
    } else {
        ended
    };
    pb::Chatroommessage {
        id: CopyKey::of(room, message).id().to_string(),
        customer_id: message.customer_id.clone(),
        chatroom_id: room.id.clone(),
        messagechat_id: message.id.clone(),
        source: Some(content::address_from_json(&message.source)),
        r#type: MessageType::proto_from_db(&message.message_type),
        text: message.text.clone(),
        medias: content::medias_from_json(&message.medias),
        tm_create: time::format(message.tm_create),
        tm_update: time::format(updated),
        tm_delete: time::format(ended),
    }
}

/// A copy the tenant (and, when given, the room's owner) may see, with what it is made of.
pub struct FoundCopy {
    pub message: ChatmessageRow,
    pub room: MemberChatroom,
    pub deleted_on_its_own: Option<NaiveDateTime>,
}

impl FoundCopy {
    pub fn to_proto(&self) -> pb::Chatroommessage {
        to_proto(&self.message, &self.room, self.deleted_on_its_own)
    }

    pub fn is_live(&self) -> bool {
        self.to_proto().tm_delete == time::format(time::live())
    }
}

/// The copy with this id, also a deleted one (with `tm_delete` set), if the tenant (and owner)
/// may see it.
pub fn get(
    conn: &mut DbConnection,
    customer_id: &str,
    id: &str,
    owner_id: Option<&str>,
) -> Result<FoundCopy, MessageError> {
    let missing = || MessageError::not_found("chatroommessage");
    let id = Uuid::parse_str(id).map_err(|_| missing())?;
    let key = queries::copy_key(conn, &id)?.ok_or_else(missing)?;
    let room = queries::rooms_by_no(conn, &[key.room_no])?
        .pop()
        .filter(|r| r.customer_id == customer_id)
        .filter(|r| owner_id.is_none_or(|o| r.owner_id == o))
        .ok_or_else(missing)?;
    let message = queries::messages_by_no(conn, &[key.message_no])?
        .pop()
        .filter(|m| m.customer_id == customer_id && m.chat_id == room.chat_id)
        .filter(|m| room.holds_copy_of(m.tm_create))
        .ok_or_else(missing)?;
    let deleted_on_its_own = queries::copy_deleted_at(conn, key)?;
    Ok(FoundCopy {
        message,
        room,
        deleted_on_its_own,
    })
}

/// The room's live copies, newest first; a deleted room, or a room of a deleted chat (whose
/// own deletion event may still be on its way), lists none.
pub fn list(
    conn: &mut DbConnection,
    room: &MemberChatroom,
    page: &Page,
) -> Result<(Vec<pb::Chatroommessage>, String), MessageError> {
    let chat_deleted = queries::member_chat(conn, &room.chat_id)?
        .is_some_and(|chat| chat.tm_delete != time::live());
    if room.tm_delete != time::live() || chat_deleted {
        return Ok((Vec::new(), String::new()));
    }
    let messages = queries::list_copies(conn, room, page)?;
    let (messages, token) = page.finish(messages, |m| {
        (m.tm_create, CopyKey::of(room, m).id().to_string())
    });
    let copies = messages.iter().map(|m| to_proto(m, room, None)).collect();
    Ok((copies, token))
}

/// Deletes one copy (the message and the other rooms' copies stay).
pub fn delete(
    conn: &mut DbConnection,
    customer_id: &str,
    id: &str,
    owner_id: Option<&str>,
) -> Result<Change<pb::Chatroommessage>, MessageError> {
    let found = get(conn, customer_id, id, owner_id)?;
    if !found.is_live() {
        return Err(MessageError::not_found("chatroommessage"));
    }
    let now = time::now();
    queries::delete_copy(
        conn,
        CopyKey::of(&found.room, &found.message),
        &found.message,
        now,
    )?;
    let copy = to_proto(&found.message, &found.room, Some(now));
    let record = MessageRecord::copy(Action::Deleted, &copy, &found.room.owner_id);
    Ok((copy, vec![record]))
}

/// Changes the message of a copy in `owner_id`'s chatroom: only the agent who sent it may
/// (its agent `source`). Every live copy changes with it; returns the owner's copy.
pub fn update(
    conn: &mut DbConnection,
    customer_id: &str,
    id: &str,
    owner_id: &str,
    edit: crate::chatmessages::Edit,
) -> Result<Change<pb::Chatroommessage>, MessageError> {
    let found = get(conn, customer_id, id, Some(owner_id))?;
    if !found.is_live() {
        return Err(MessageError::not_found("chatroommessage"));
    }
    let source = content::address_from_json(&found.message.source);
    if source.r#type != "agent" || source.target != owner_id {
        return Err(MessageError::PermissionDenied(
            "chatroommessage: only the agent who sent the message may edit it".into(),
        ));
    }
    let (message, records) = crate::chatmessages::edit_message(conn, found.message, edit)?;
    Ok((to_proto(&message, &found.room, None), records))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_ids_round_trip_and_are_told_apart_from_other_uuids() {
        for (room_no, message_no) in [(1, 0), (1, 1), ((1 << 60) - 1, (1 << 60) - 1), (4097, 77)] {
            let key = CopyKey {
                room_no,
                message_no,
            };
            let id = key.id();
            assert_eq!(id.get_version_num(), 8, "{id}");
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122, "{id}");
            assert_eq!(CopyKey::parse(&id), Some(key), "{id}");
        }
        assert_eq!(CopyKey::parse(&Uuid::new_v4()), None);
        assert_eq!(CopyKey::parse(&Uuid::nil()), None);
    }

    #[test]
    fn within_a_room_copy_ids_sort_as_their_messages_ids() {
        let mut ids: Vec<Uuid> = (0..200).map(|_| Uuid::new_v4()).collect();
        ids.sort();
        let copies: Vec<String> = ids
            .iter()
            .map(|id| {
                CopyKey {
                    room_no: 12_345,
                    message_no: message_no(id),
                }
                .id()
                .to_string()
            })
            .collect();
        let mut sorted = copies.clone();
        sorted.sort();
        assert_eq!(copies, sorted);
        // Message numbers themselves sort as the ids.
        let nos: Vec<i64> = ids.iter().map(message_no).collect();
        assert!(nos.windows(2).all(|w| w[0] < w[1]));
        assert!(nos.iter().all(|n| *n >= 0 && *n < 1 << 60));
    }
}
