use chrono::NaiveDateTime;
use common::db::{DbConnection, MultiBackend};
use common::page::Page;
use common::time;
use common::{insert_rows, paginate};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{QueryFragment, QueryId};

use super::models::{ChatmessageRow, ChatroommessageRow, MemberChat, MemberChatroom};
use super::schema::{
    chatmessages, chatroommessages, member_chatrooms, member_chats, processed_events,
};

pub fn insert_message(
    conn: &mut DbConnection,
    message: &ChatmessageRow,
    copies: &[ChatroommessageRow],
) -> QueryResult<()> {
    diesel::insert_into(chatmessages::table)
        .values(message)
        .execute(conn)?;
    // SQLite caps bound parameters per statement (12 columns x 500 rows stays under it).
    for chunk in copies.chunks(500) {
        insert_rows!(conn, chatroommessages::table, chunk)?;
    }
    Ok(())
}

/// Writes the message, its copies and its outbox row. On PostgreSQL one statement (atomic on
/// its own, so no transaction is needed: one round trip in all); on SQLite a transaction.
pub fn insert_message_and_outbox(
    conn: &mut DbConnection,
    message: &ChatmessageRow,
    copies: &[ChatroommessageRow],
    outbox_row: &common::outbox::OutboxRow,
) -> QueryResult<()> {
    use diesel::sql_types::{Array, Integer, Nullable, Text, Timestamp};
    match conn {
        DbConnection::Pg(pg) => {
            // The copies share the message's content; only their ids, rooms and owners differ.
            let ids: Vec<&str> = copies.iter().map(|c| c.id.as_str()).collect();
            let rooms: Vec<&str> = copies.iter().map(|c| c.chatroom_id.as_str()).collect();
            let owners: Vec<&str> = copies.iter().map(|c| c.owner_id.as_str()).collect();
            diesel::sql_query(
                "WITH message AS (\
                   INSERT INTO chatmessages (id, customer_id, chat_id, source, message_type, \
                     text, medias, tm_create, tm_update, tm_delete) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9)), \
                 copies AS (\
                   INSERT INTO chatroommessages (id, customer_id, chatroom_id, owner_id, \
                     messagechat_id, source, message_type, text, medias, tm_create, tm_update, \
                     tm_delete) \
                   SELECT c.id, $2, c.room, c.owner, $1, $4, $5, $6, $7, $8, $8, $9 \
                   FROM unnest($10::text[], $11::text[], $12::text[]) AS c(id, room, owner)) \
                 INSERT INTO outbox (events, event_count, request_id, traceparent, created_at) \
                 VALUES ($13, $14, $15, $16, $17)",
            )
            .bind::<Text, _>(&message.id)
            .bind::<Text, _>(&message.customer_id)
            .bind::<Text, _>(&message.chat_id)
            .bind::<Text, _>(&message.source)
            .bind::<Text, _>(&message.message_type)
            .bind::<Text, _>(&message.text)
            .bind::<Text, _>(&message.medias)
            .bind::<Timestamp, _>(message.tm_create)
            .bind::<Timestamp, _>(message.tm_delete)
            .bind::<Array<Text>, _>(&ids)
            .bind::<Array<Text>, _>(&rooms)
            .bind::<Array<Text>, _>(&owners)
            .bind::<Text, _>(&outbox_row.events)
            .bind::<Integer, _>(outbox_row.event_count)
            .bind::<Nullable<Text>, _>(&outbox_row.request_id)
            .bind::<Nullable<Text>, _>(&outbox_row.traceparent)
            .bind::<Timestamp, _>(outbox_row.created_at)
            .execute(pg)?;
            Ok(())
        }
        DbConnection::Sqlite(_) => conn.transaction(|conn| {
            insert_message(conn, message, copies)?;
            diesel::insert_into(common::outbox::outbox::table)
                .values((
                    common::outbox::outbox::events.eq(&outbox_row.events),
                    common::outbox::outbox::event_count.eq(outbox_row.event_count),
                    common::outbox::outbox::request_id.eq(&outbox_row.request_id),
                    common::outbox::outbox::traceparent.eq(&outbox_row.traceparent),
                    common::outbox::outbox::created_at.eq(outbox_row.created_at),
                ))
                .execute(conn)?;
            Ok(())
        }),
    }
}

pub fn find_message(
    conn: &mut DbConnection,
    customer_id: &str,
    id: &str,
) -> QueryResult<Option<ChatmessageRow>> {
    chatmessages::table
        .filter(chatmessages::id.eq(id))
        .filter(chatmessages::customer_id.eq(customer_id))
        .select(ChatmessageRow::as_select())
        .first(conn)
        .optional()
}

/// A page of the chat's live messages, newest first, boxed for the backend `$db`: the one
/// builder behind `list_messages` and `list_messages_pg`.
macro_rules! messages_page {
    ($db:ty, $chat_id:expr, $page:expr) => {{
        let query = chatmessages::table
            .filter(chatmessages::chat_id.eq($chat_id))
            .filter(chatmessages::tm_delete.eq(time::live()))
            .select(ChatmessageRow::as_select())
            .into_boxed::<$db>();
        paginate!(query, chatmessages::tm_create, chatmessages::id, $page)
    }};
}

pub fn list_messages(
    conn: &mut DbConnection,
    chat_id: &str,
    page: &Page,
) -> QueryResult<Vec<ChatmessageRow>> {
    messages_page!(MultiBackend, chat_id, page).load(conn)
}

/// The statement `list_messages` runs, built for PostgreSQL alone: to show and check its plan
/// (`debug_query`, `EXPLAIN`; see tests/list_plan.rs).
pub fn list_messages_pg<'a>(
    chat_id: &'a str,
    page: &Page,
) -> impl QueryFragment<Pg> + QueryId + Send + 'a {
    messages_page!(Pg, chat_id, page)
}

pub fn find_copy(
    conn: &mut DbConnection,
    customer_id: &str,
    id: &str,
    owner_id: Option<&str>,
) -> QueryResult<Option<ChatroommessageRow>> {
    let mut query = chatroommessages::table
        .filter(chatroommessages::id.eq(id))
        .filter(chatroommessages::customer_id.eq(customer_id))
        .select(ChatroommessageRow::as_select())
        .into_boxed();
    if let Some(owner) = owner_id {
        query = query.filter(chatroommessages::owner_id.eq(owner));
    }
    query.first(conn).optional()
}

pub fn live_copies_of(
    conn: &mut DbConnection,
    messagechat_id: &str,
) -> QueryResult<Vec<ChatroommessageRow>> {
    chatroommessages::table
        .filter(chatroommessages::messagechat_id.eq(messagechat_id))
        .filter(chatroommessages::tm_delete.eq(time::live()))
        .select(ChatroommessageRow::as_select())
        .load(conn)
}

/// A page of the chatroom's live copies, newest first, boxed for the backend `$db`: the one
/// builder behind `list_copies` and `list_copies_pg`.
macro_rules! copies_page {
    ($db:ty, $chatroom_id:expr, $page:expr) => {{
        let query = chatroommessages::table
            .filter(chatroommessages::chatroom_id.eq($chatroom_id))
            .filter(chatroommessages::tm_delete.eq(time::live()))
            .select(ChatroommessageRow::as_select())
            .into_boxed::<$db>();
        paginate!(
            query,
            chatroommessages::tm_create,
            chatroommessages::id,
            $page
        )
    }};
}

pub fn list_copies(
    conn: &mut DbConnection,
    chatroom_id: &str,
    page: &Page,
) -> QueryResult<Vec<ChatroommessageRow>> {
    copies_page!(MultiBackend, chatroom_id, page).load(conn)
}

/// The statement `list_copies` runs, built for PostgreSQL alone (see `list_messages_pg`).
pub fn list_copies_pg<'a>(
    chatroom_id: &'a str,
    page: &Page,
) -> impl QueryFragment<Pg> + QueryId + Send + 'a {
    copies_page!(Pg, chatroom_id, page)
}

pub fn delete_message(conn: &mut DbConnection, id: &str, now: NaiveDateTime) -> QueryResult<()> {
    diesel::update(chatmessages::table.filter(chatmessages::id.eq(id)))
        .set((
            chatmessages::tm_update.eq(now),
            chatmessages::tm_delete.eq(now),
        ))
        .execute(conn)
        .map(|_| ())
}

pub fn delete_copies(
    conn: &mut DbConnection,
    ids: &[String],
    now: NaiveDateTime,
) -> QueryResult<()> {
    for chunk in ids.chunks(500) {
        diesel::update(chatroommessages::table.filter(chatroommessages::id.eq_any(chunk)))
            .set((
                chatroommessages::tm_update.eq(now),
                chatroommessages::tm_delete.eq(now),
            ))
            .execute(conn)?;
    }
    Ok(())
}

// The membership view.

pub fn member_chat(conn: &mut DbConnection, id: &str) -> QueryResult<Option<MemberChat>> {
    member_chats::table
        .find(id)
        .select(MemberChat::as_select())
        .first(conn)
        .optional()
}

pub fn member_room(conn: &mut DbConnection, id: &str) -> QueryResult<Option<MemberChatroom>> {
    member_chatrooms::table
        .find(id)
        .select(MemberChatroom::as_select())
        .first(conn)
        .optional()
}

/// The chat and its live chatrooms (ordered by id), in one query.
pub fn member_chat_with_rooms(
    conn: &mut DbConnection,
    id: &str,
) -> QueryResult<Option<(MemberChat, Vec<MemberChatroom>)>> {
    let rows: Vec<(MemberChat, Option<MemberChatroom>)> = member_chats::table
        .left_join(
            member_chatrooms::table.on(member_chatrooms::chat_id
                .eq(member_chats::id)
                .and(member_chatrooms::tm_delete.eq(time::live()))),
        )
        .filter(member_chats::id.eq(id))
        .order(member_chatrooms::id.asc())
        .select((
            MemberChat::as_select(),
            Option::<MemberChatroom>::as_select(),
        ))
        .load(conn)?;
    let mut rows = rows.into_iter();
    let Some((chat, first)) = rows.next() else {
        return Ok(None);
    };
    let rooms = first
        .into_iter()
        .chain(rows.filter_map(|(_, r)| r))
        .collect();
    Ok(Some((chat, rooms)))
}

/// Stores what the view learnt of a chat, unless it already knows a newer state. A deletion
/// is final.
pub fn upsert_member_chat(conn: &mut DbConnection, chat: &MemberChat) -> QueryResult<()> {
    match member_chat(conn, &chat.id)? {
        None => insert_or_ignore(conn, |c| {
            diesel::insert_into(member_chats::table)
                .values(chat)
                .execute(c)
        }),
        Some(known) if newer(&known.tm_update, &known.tm_delete, chat.tm_update) => {
            diesel::update(member_chats::table.find(&chat.id))
                .set(chat)
                .execute(conn)
                .map(|_| ())
        }
        Some(_) => Ok(()),
    }
}

pub fn upsert_member_room(conn: &mut DbConnection, room: &MemberChatroom) -> QueryResult<()> {
    match member_room(conn, &room.id)? {
        None => insert_or_ignore(conn, |c| {
            diesel::insert_into(member_chatrooms::table)
                .values(room)
                .execute(c)
        }),
        Some(known) if newer(&known.tm_update, &known.tm_delete, room.tm_update) => {
            diesel::update(member_chatrooms::table.find(&room.id))
                .set(room)
                .execute(conn)
                .map(|_| ())
        }
        Some(_) => Ok(()),
    }
}

fn newer(
    known_update: &NaiveDateTime,
    known_delete: &NaiveDateTime,
    incoming: NaiveDateTime,
) -> bool {
    *known_delete == time::live() && incoming >= *known_update
}

/// A concurrent writer inserted the same row first: what it wrote is as good. The insert runs
/// in a savepoint, so on PostgreSQL the surrounding transaction survives the violation.
fn insert_or_ignore(
    conn: &mut DbConnection,
    insert: impl FnOnce(&mut DbConnection) -> QueryResult<usize>,
) -> QueryResult<()> {
    match conn.transaction(insert) {
        Ok(_)
        | Err(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        )) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Records an applied event; false when it had been applied already.
pub fn mark_processed(conn: &mut DbConnection, event_id: &str) -> QueryResult<bool> {
    let seen = processed_events::table
        .find(event_id)
        .count()
        .get_result::<i64>(conn)?;
    if seen > 0 {
        return Ok(false);
    }
    diesel::insert_into(processed_events::table)
        .values((
            processed_events::id.eq(event_id),
            processed_events::processed_at.eq(time::now()),
        ))
        .execute(conn)?;
    Ok(true)
}

/// How long applied event ids are remembered: far longer than any redelivery takes.
pub const KEEP_PROCESSED_DAYS: i64 = 7;

pub fn purge_processed(conn: &mut DbConnection) -> QueryResult<usize> {
    let cutoff = time::now() - chrono::Duration::days(KEEP_PROCESSED_DAYS);
    diesel::delete(processed_events::table.filter(processed_events::processed_at.lt(cutoff)))
        .execute(conn)
}
