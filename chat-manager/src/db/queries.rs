use chrono::NaiveDateTime;
use common::db::DbConnection;
use common::page::Page;
use common::paginate;
use common::time;
use diesel::prelude::*;

use super::models::{ChatRow, ChatroomRow, ChatroomView, decode_ids};
use super::schema::{chatrooms, chats};

pub fn insert_chat(conn: &mut DbConnection, row: &ChatRow) -> QueryResult<()> {
    diesel::insert_into(chats::table)
        .values(row)
        .execute(conn)
        .map(|_| ())
}

pub fn insert_chatrooms(conn: &mut DbConnection, rows: &[ChatroomRow]) -> QueryResult<()> {
    // SQLite caps bound parameters per statement (9 columns x 500 rows stays under it).
    for chunk in rows.chunks(500) {
        common::insert_rows!(conn, chatrooms::table, chunk)?;
    }
    Ok(())
}

/// A chat of the tenant, live or deleted.
pub fn find_chat(
    conn: &mut DbConnection,
    customer_id: &str,
    id: &str,
) -> QueryResult<Option<ChatRow>> {
    chats::table
        .filter(chats::id.eq(id))
        .filter(chats::customer_id.eq(customer_id))
        .select(ChatRow::as_select())
        .first(conn)
        .optional()
}

pub fn list_chats(
    conn: &mut DbConnection,
    customer_id: &str,
    page: &Page,
) -> QueryResult<Vec<ChatRow>> {
    let query = chats::table
        .filter(chats::customer_id.eq(customer_id))
        .filter(chats::tm_delete.eq(time::live()))
        .select(ChatRow::as_select())
        .into_boxed();
    paginate!(query, chats::tm_create, chats::id, page).load(conn)
}

/// Saves the mutable fields of a chat.
pub fn save_chat(conn: &mut DbConnection, row: &ChatRow) -> QueryResult<()> {
    diesel::update(chats::table.filter(chats::id.eq(&row.id)))
        .set((
            chats::owner_id.eq(&row.owner_id),
            chats::participant_ids.eq(&row.participant_ids),
            chats::name.eq(&row.name),
            chats::detail.eq(&row.detail),
            chats::normal_pair.eq(&row.normal_pair),
            chats::tm_update.eq(row.tm_update),
            chats::tm_delete.eq(row.tm_delete),
        ))
        .execute(conn)
        .map(|_| ())
}

pub fn live_rooms_of_chat(conn: &mut DbConnection, chat_id: &str) -> QueryResult<Vec<ChatroomRow>> {
    chatrooms::table
        .filter(chatrooms::chat_id.eq(chat_id))
        .filter(chatrooms::tm_delete.eq(time::live()))
        .order(chatrooms::id.asc())
        .select(ChatroomRow::as_select())
        .load(conn)
}

/// Marks rooms of a chat touched (their participant list changed).
pub fn touch_rooms(conn: &mut DbConnection, ids: &[String], now: NaiveDateTime) -> QueryResult<()> {
    for chunk in ids.chunks(500) {
        diesel::update(chatrooms::table.filter(chatrooms::id.eq_any(chunk)))
            .set(chatrooms::tm_update.eq(now))
            .execute(conn)?;
    }
    Ok(())
}

pub fn delete_rooms(
    conn: &mut DbConnection,
    ids: &[String],
    now: NaiveDateTime,
) -> QueryResult<()> {
    for chunk in ids.chunks(500) {
        diesel::update(chatrooms::table.filter(chatrooms::id.eq_any(chunk)))
            .set((chatrooms::tm_update.eq(now), chatrooms::tm_delete.eq(now)))
            .execute(conn)?;
    }
    Ok(())
}

pub fn save_room(conn: &mut DbConnection, row: &ChatroomRow) -> QueryResult<()> {
    diesel::update(chatrooms::table.filter(chatrooms::id.eq(&row.id)))
        .set((
            chatrooms::name.eq(&row.name),
            chatrooms::detail.eq(&row.detail),
            chatrooms::tm_update.eq(row.tm_update),
            chatrooms::tm_delete.eq(row.tm_delete),
        ))
        .execute(conn)
        .map(|_| ())
}

type RoomWithChat = (ChatroomRow, (String, String));

fn to_view((room, (chat_type, participant_ids)): RoomWithChat) -> ChatroomView {
    ChatroomView {
        room,
        chat_type,
        participant_ids: decode_ids(&participant_ids).into(),
    }
}

/// A chatroom of the tenant (optionally only if `owner_id` owns it), live or deleted.
pub fn find_room(
    conn: &mut DbConnection,
    customer_id: &str,
    id: &str,
    owner_id: Option<&str>,
) -> QueryResult<Option<ChatroomView>> {
    let mut query = chatrooms::table
        .inner_join(chats::table)
        .filter(chatrooms::id.eq(id))
        .filter(chatrooms::customer_id.eq(customer_id))
        .select((
            ChatroomRow::as_select(),
            (chats::chat_type, chats::participant_ids),
        ))
        .into_boxed();
    if let Some(owner) = owner_id {
        query = query.filter(chatrooms::owner_id.eq(owner));
    }
    Ok(query.first::<RoomWithChat>(conn).optional()?.map(to_view))
}

pub fn list_rooms(
    conn: &mut DbConnection,
    customer_id: &str,
    owner_id: Option<&str>,
    page: &Page,
) -> QueryResult<Vec<ChatroomView>> {
    let mut query = chatrooms::table
        .inner_join(chats::table)
        .filter(chatrooms::customer_id.eq(customer_id))
        .filter(chatrooms::tm_delete.eq(time::live()))
        .select((
            ChatroomRow::as_select(),
            (chats::chat_type, chats::participant_ids),
        ))
        .into_boxed();
    if let Some(owner) = owner_id {
        query = query.filter(chatrooms::owner_id.eq(owner));
    }
    let rows: Vec<RoomWithChat> =
        paginate!(query, chatrooms::tm_create, chatrooms::id, page).load(conn)?;
    Ok(rows.into_iter().map(to_view).collect())
}

/// The live normal chat of a pair ("<a>,<b>", sorted), if any.
pub fn find_normal_chat(
    conn: &mut DbConnection,
    customer_id: &str,
    pair: &str,
) -> QueryResult<Option<ChatRow>> {
    chats::table
        .filter(chats::customer_id.eq(customer_id))
        .filter(chats::normal_pair.eq(pair))
        .select(ChatRow::as_select())
        .first(conn)
        .optional()
}
