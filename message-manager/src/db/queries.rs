use chrono::NaiveDateTime;
use common::db::{DbConnection, MultiBackend};
use common::page::Page;
use common::paginate;
use common::time;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{QueryFragment, QueryId};

use super::models::{ChatmessageRow, MemberChat, MemberChatroom};
use super::schema::{
    chatmessages, chatroommessage_deletions, legacy_copy_ids, member_chatrooms, member_chats,
};
use crate::chatroommessages::{CopyKey, message_no};

/// Writes the message at the next place of its chat (its copies are derived from it; see
/// `chatroommessages`), inside the caller's transaction. The chat's counters are updated
/// first, and that row stays locked until the transaction ends, so a chat's messages take
/// their places (`chat_seq`) and times in the order they commit: `tm_create` becomes just after
/// the chat's last message's when the clock has not passed it. Sets both on `message`.
pub fn insert_message(conn: &mut DbConnection, message: &mut ChatmessageRow) -> QueryResult<()> {
    let chat = member_chats::table
        .find(message.chat_id.clone())
        .filter(member_chats::customer_id.eq(message.customer_id.clone()));
    let counted = diesel::update(chat.clone())
        .set(member_chats::last_seq.eq(member_chats::last_seq + 1))
        .execute(conn)?;
    if counted == 0 {
        return Err(diesel::result::Error::NotFound);
    }
    let (seq, last_at): (i64, NaiveDateTime) = chat
        .clone()
        .select((member_chats::last_seq, member_chats::last_message_at))
        .first(conn)?;
    let at = message
        .tm_create
        .max(last_at + chrono::TimeDelta::microseconds(1));
    diesel::update(chat)
        .set(member_chats::last_message_at.eq(at))
        .execute(conn)?;
    message.chat_seq = seq;
    message.tm_create = at;
    message.tm_update = at;
    diesel::insert_into(chatmessages::table)
        .values(&*message)
        .execute(conn)
        .map(|_| ())
}

/// Writes the message (as `insert_message` does) and its outbox row. On PostgreSQL one
/// statement (atomic on its own, so no transaction is needed: one round trip in all), kept
/// prepared; on SQLite a transaction.
pub fn insert_message_and_outbox(
    conn: &mut DbConnection,
    message: &mut ChatmessageRow,
    outbox_row: &pipeline::outbox::OutboxRow,
) -> QueryResult<()> {
    match conn {
        DbConnection::Pg(pg) => {
            let placed: Vec<(i64, NaiveDateTime)> = SendStatement {
                message,
                outbox: outbox_row,
            }
            .load(pg)?;
            // No row: the chat is not in the view (the send checked it was).
            let (seq, at) = placed
                .into_iter()
                .next()
                .ok_or(diesel::result::Error::NotFound)?;
            message.chat_seq = seq;
            message.tm_create = at;
            message.tm_update = at;
            Ok(())
        }
        DbConnection::Sqlite(_) => conn.transaction(|conn| {
            insert_message(conn, message)?;
            diesel::insert_into(pipeline::outbox::outbox::table)
                .values(outbox_row)
                .execute(conn)?;
            Ok(())
        }),
    }
}

/// The send's one statement on PostgreSQL: the chat's counters, the message at its place, and
/// its outbox row; it returns the message's place and time. A statement type of its own rather
/// than `sql_query`, which diesel never keeps prepared: this one is parsed and planned once per
/// connection, then only executed (one round trip, no parse).
struct SendStatement<'a> {
    message: &'a ChatmessageRow,
    outbox: &'a pipeline::outbox::OutboxRow,
}

impl QueryFragment<Pg> for SendStatement<'_> {
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, Pg>,
    ) -> QueryResult<()> {
        use diesel::sql_types::{BigInt, Integer, Nullable, Text, Timestamp};
        let (m, o) = (self.message, self.outbox);
        out.push_sql(
            "WITH chat AS (UPDATE member_chats SET last_seq = last_seq + 1, \
             last_message_at = GREATEST(last_message_at + interval '1 microsecond', ",
        );
        out.push_bind_param::<Timestamp, _>(&m.tm_create)?;
        out.push_sql(") WHERE id = ");
        out.push_bind_param::<Text, _>(&m.chat_id)?;
        out.push_sql(" AND customer_id = ");
        out.push_bind_param::<Text, _>(&m.customer_id)?;
        out.push_sql(
            " RETURNING last_seq, last_message_at), \
             message AS (INSERT INTO chatmessages (no, id, customer_id, chat_id, source, \
             message_type, text, medias, tm_create, tm_update, tm_delete, chat_seq, sender_id) \
             SELECT ",
        );
        out.push_bind_param::<BigInt, _>(&m.no)?;
        for text in [
            &m.id,
            &m.customer_id,
            &m.chat_id,
            &m.source,
            &m.message_type,
            &m.text,
            &m.medias,
        ] {
            out.push_sql(", ");
            out.push_bind_param::<Text, _>(text)?;
        }
        out.push_sql(", chat.last_message_at, chat.last_message_at, ");
        out.push_bind_param::<Timestamp, _>(&m.tm_delete)?;
        out.push_sql(", chat.last_seq, ");
        out.push_bind_param::<Nullable<Text>, _>(&m.sender_id)?;
        out.push_sql(
            " FROM chat RETURNING chat_seq, tm_create), \
             sent AS (INSERT INTO outbox (events, event_count, request_id, traceparent, \
             created_at, publish_bytes) SELECT ",
        );
        out.push_bind_param::<Text, _>(&o.events)?;
        out.push_sql(", ");
        out.push_bind_param::<Integer, _>(&o.event_count)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Text>, _>(&o.request_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Text>, _>(&o.traceparent)?;
        out.push_sql(", ");
        out.push_bind_param::<Timestamp, _>(&o.created_at)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Integer>, _>(&o.publish_bytes)?;
        out.push_sql(
            " FROM message RETURNING 1) \
             SELECT message.chat_seq, message.tm_create FROM message, sent",
        );
        Ok(())
    }
}

impl QueryId for SendStatement<'_> {
    type QueryId = ();
    // Cached by its SQL text, which never changes.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl diesel::query_builder::Query for SendStatement<'_> {
    type SqlType = (diesel::sql_types::BigInt, diesel::sql_types::Timestamp);
}

impl RunQueryDsl<PgConnection> for SendStatement<'_> {}

/// The message of the tenant with this id (`no` is derived from it: the primary key).
pub fn find_message(
    conn: &mut DbConnection,
    customer_id: &str,
    id: &uuid::Uuid,
) -> QueryResult<Option<ChatmessageRow>> {
    chatmessages::table
        .find(message_no(id))
        .filter(chatmessages::id.eq(id.hyphenated().to_string()))
        .filter(chatmessages::customer_id.eq(customer_id))
        .select(ChatmessageRow::as_select())
        .first(conn)
        .optional()
}

/// Messages by their numbers (the relay expanding their events).
pub fn messages_by_no(conn: &mut DbConnection, nos: &[i64]) -> QueryResult<Vec<ChatmessageRow>> {
    chatmessages::table
        .filter(chatmessages::no.eq_any(nos))
        .select(ChatmessageRow::as_select())
        .load(conn)
}

/// A page cursor's tie-breaking chatmessage id, as the list's key.
fn message_cursor(id: &str) -> Option<i64> {
    uuid::Uuid::parse_str(id).ok().map(|id| message_no(&id))
}

/// A page cursor's tie-breaking copy id, as the list's key (the copy's message number: within
/// one room, copy ids sort as their messages' numbers do).
fn copy_cursor(id: &str) -> Option<i64> {
    uuid::Uuid::parse_str(id)
        .ok()
        .and_then(|id| CopyKey::parse(&id))
        .map(|k| k.message_no)
}

/// A page of the chat's live messages, newest first, boxed for the backend `$db`: the one
/// builder behind `list_messages` and `list_messages_pg`.
macro_rules! messages_page {
    ($db:ty, $customer_id:expr, $chat_id:expr, $page:expr) => {{
        let query = chatmessages::table
            .filter(chatmessages::chat_id.eq($chat_id))
            .filter(chatmessages::customer_id.eq($customer_id))
            .filter(chatmessages::tm_delete.eq(time::live()))
            .select(ChatmessageRow::as_select())
            .into_boxed::<$db>();
        paginate!(
            query,
            chatmessages::tm_create,
            chatmessages::no,
            $page,
            message_cursor
        )
    }};
}

pub fn list_messages(
    conn: &mut DbConnection,
    customer_id: &str,
    chat_id: &str,
    page: &Page,
) -> QueryResult<Vec<ChatmessageRow>> {
    messages_page!(MultiBackend, customer_id, chat_id, page).load(conn)
}

/// The statement `list_messages` runs, built for PostgreSQL alone: to show and check its plan
/// (`debug_query`, `EXPLAIN`; see tests/list_plan.rs).
pub fn list_messages_pg<'a>(
    customer_id: &'a str,
    chat_id: &'a str,
    page: &Page,
) -> impl QueryFragment<Pg> + QueryId + Send + 'a {
    messages_page!(Pg, customer_id, chat_id, page)
}

/// Where a copy id points: its chatroom's and its message's numbers. Copies written before
/// they were derived keep their old (random) ids, looked up in `legacy_copy_ids`.
pub fn copy_key(conn: &mut DbConnection, id: &uuid::Uuid) -> QueryResult<Option<CopyKey>> {
    if let Some(key) = CopyKey::parse(id) {
        return Ok(Some(key));
    }
    legacy_copy_ids::table
        .find(id.hyphenated().to_string())
        .select((legacy_copy_ids::room_no, legacy_copy_ids::message_no))
        .first::<(i64, i64)>(conn)
        .optional()
        .map(|found| {
            found.map(|(room_no, message_no)| CopyKey {
                room_no,
                message_no,
            })
        })
}

/// When the copy was deleted on its own, if it was.
pub fn copy_deleted_at(
    conn: &mut DbConnection,
    key: CopyKey,
) -> QueryResult<Option<NaiveDateTime>> {
    chatroommessage_deletions::table
        .find((key.room_no, key.message_no))
        .select(chatroommessage_deletions::tm_delete)
        .first(conn)
        .optional()
}

/// A page of the room's live copies, newest first: the messages of its chat sent while it was
/// live, less those deleted and those whose copy was deleted on its own. Boxed for the backend
/// `$db`: the one builder behind `list_copies` and `list_copies_pg`.
macro_rules! copies_page {
    ($db:ty, $room:expr, $page:expr) => {{
        let room: &MemberChatroom = $room;
        let deleted_on_its_own = chatroommessage_deletions::table
            .filter(chatroommessage_deletions::room_no.eq(room.no))
            .filter(chatroommessage_deletions::message_no.eq(chatmessages::no));
        let query = chatmessages::table
            .filter(chatmessages::chat_id.eq(room.chat_id.as_str()))
            .filter(chatmessages::customer_id.eq(room.customer_id.as_str()))
            .filter(chatmessages::tm_delete.eq(time::live()))
            .filter(chatmessages::tm_create.ge(room.tm_create))
            .filter(chatmessages::tm_create.lt(room.tm_delete))
            .filter(diesel::dsl::not(diesel::dsl::exists(deleted_on_its_own)))
            .select(ChatmessageRow::as_select())
            .into_boxed::<$db>();
        paginate!(
            query,
            chatmessages::tm_create,
            chatmessages::no,
            $page,
            copy_cursor
        )
    }};
}

/// The messages whose copies `room` lists on this page.
pub fn list_copies(
    conn: &mut DbConnection,
    room: &MemberChatroom,
    page: &Page,
) -> QueryResult<Vec<ChatmessageRow>> {
    copies_page!(MultiBackend, room, page).load(conn)
}

/// The statement `list_copies` runs, built for PostgreSQL alone (see `list_messages_pg`).
pub fn list_copies_pg<'a>(
    room: &'a MemberChatroom,
    page: &Page,
) -> impl QueryFragment<Pg> + QueryId + Send + 'a {
    copies_page!(Pg, room, page)
}

/// Saves a message's text and medias, and when they changed.
pub fn save_message_content(conn: &mut DbConnection, message: &ChatmessageRow) -> QueryResult<()> {
    diesel::update(chatmessages::table.find(message.no))
        .set((
            chatmessages::text.eq(&message.text),
            chatmessages::medias.eq(&message.medias),
            chatmessages::tm_update.eq(message.tm_update),
        ))
        .execute(conn)
        .map(|_| ())
}

pub fn delete_message(conn: &mut DbConnection, no: i64, now: NaiveDateTime) -> QueryResult<()> {
    diesel::update(chatmessages::table.find(no))
        .set((
            chatmessages::tm_update.eq(now),
            chatmessages::tm_delete.eq(now),
        ))
        .execute(conn)
        .map(|_| ())
}

/// Records a copy of `message` deleted on its own.
pub fn delete_copy(
    conn: &mut DbConnection,
    key: CopyKey,
    message: &ChatmessageRow,
    now: NaiveDateTime,
) -> QueryResult<()> {
    diesel::insert_into(chatroommessage_deletions::table)
        .values((
            chatroommessage_deletions::room_no.eq(key.room_no),
            chatroommessage_deletions::message_no.eq(key.message_no),
            chatroommessage_deletions::tm_delete.eq(now),
            chatroommessage_deletions::chat_seq.eq(message.chat_seq),
            chatroommessage_deletions::sender_id.eq(&message.sender_id),
        ))
        .execute(conn)
        .map(|_| ())
}

/// The chatrooms holding a live copy of `message` now: the rooms of its chat that were live
/// when it was sent and still are, whose copy was not deleted on its own.
pub fn rooms_with_live_copy(
    conn: &mut DbConnection,
    message: &ChatmessageRow,
) -> QueryResult<Vec<MemberChatroom>> {
    let rooms: Vec<MemberChatroom> = member_chatrooms::table
        .filter(member_chatrooms::chat_id.eq(&message.chat_id))
        .filter(member_chatrooms::customer_id.eq(&message.customer_id))
        .filter(member_chatrooms::tm_delete.eq(time::live()))
        .filter(member_chatrooms::tm_create.le(message.tm_create))
        .order(member_chatrooms::no.asc())
        .select(MemberChatroom::as_select())
        .load(conn)?;
    let deleted: Vec<i64> = chatroommessage_deletions::table
        .filter(chatroommessage_deletions::message_no.eq(message.no))
        .filter(chatroommessage_deletions::room_no.eq_any(rooms.iter().map(|r| r.no)))
        .select(chatroommessage_deletions::room_no)
        .load(conn)?;
    Ok(rooms
        .into_iter()
        .filter(|r| !deleted.contains(&r.no))
        .collect())
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

/// The tenant's chatroom.
pub fn tenant_room(
    conn: &mut DbConnection,
    customer_id: &str,
    id: &str,
) -> QueryResult<Option<MemberChatroom>> {
    member_chatrooms::table
        .find(id)
        .filter(member_chatrooms::customer_id.eq(customer_id))
        .select(MemberChatroom::as_select())
        .first(conn)
        .optional()
}

/// Notes that the view confirmed the chat's state now.
pub fn mark_checked(conn: &mut DbConnection, id: &str, at: NaiveDateTime) -> QueryResult<()> {
    diesel::update(member_chats::table.find(id))
        .set(member_chats::tm_checked.eq(at))
        .execute(conn)
        .map(|_| ())
}

/// Rooms by their numbers (copy ids carry them).
pub fn rooms_by_no(conn: &mut DbConnection, nos: &[i64]) -> QueryResult<Vec<MemberChatroom>> {
    member_chatrooms::table
        .filter(member_chatrooms::no.eq_any(nos))
        .select(MemberChatroom::as_select())
        .load(conn)
}

/// The tenant's chat and its live chatrooms (ordered by id), in one statement: the chat's row,
/// then one row per room (a join would repeat the chat's participant list on every room's
/// row: 40 KB times a thousand rooms for a 1,000-person chat).
pub fn member_chat_with_rooms(
    conn: &mut DbConnection,
    customer_id: &str,
    id: &str,
) -> QueryResult<Option<(MemberChat, Vec<MemberChatroom>)>> {
    use diesel::sql_types::{BigInt, Nullable, Text, Timestamp};
    #[derive(QueryableByName)]
    struct Row {
        /// 0: the chat; 1: a room.
        #[diesel(sql_type = BigInt)]
        part: i64,
        #[diesel(sql_type = Nullable<BigInt>)]
        no: Option<i64>,
        #[diesel(sql_type = Text)]
        id: String,
        #[diesel(sql_type = Text)]
        customer_id: String,
        /// The chat: its participants (JSON); a room: its chat.
        #[diesel(sql_type = Text)]
        text: String,
        #[diesel(sql_type = Nullable<Text>)]
        owner_id: Option<String>,
        /// The chat: when it was confirmed; a room: its creation.
        #[diesel(sql_type = Nullable<Timestamp>)]
        tm_create: Option<NaiveDateTime>,
        #[diesel(sql_type = Timestamp)]
        tm_update: NaiveDateTime,
        #[diesel(sql_type = Timestamp)]
        tm_delete: NaiveDateTime,
    }
    let query = MembershipQuery {
        customer_id,
        chat_id: id,
        live: time::live(),
    };
    let rows: Vec<Row> = match conn {
        DbConnection::Pg(c) => query.load(c)?,
        DbConnection::Sqlite(c) => query.load(c)?,
    };
    let mut rows = rows.into_iter();
    let Some(chat) = rows.next().filter(|r| r.part == 0) else {
        return Ok(None);
    };
    let chat = MemberChat {
        id: chat.id,
        customer_id: chat.customer_id,
        participant_ids: chat.text,
        tm_update: chat.tm_update,
        tm_delete: chat.tm_delete,
        tm_checked: chat.tm_create.unwrap_or_default(),
    };
    let rooms = rows
        .map(|r| MemberChatroom {
            no: r.no.unwrap_or_default(),
            id: r.id,
            customer_id: r.customer_id,
            chat_id: r.text,
            owner_id: r.owner_id.unwrap_or_default(),
            tm_create: r.tm_create.unwrap_or(r.tm_update),
            tm_update: r.tm_update,
            tm_delete: r.tm_delete,
        })
        .collect();
    Ok(Some((chat, rooms)))
}

/// `member_chat_with_rooms`' statement, kept prepared like `SendStatement` (both backends).
struct MembershipQuery<'a> {
    customer_id: &'a str,
    chat_id: &'a str,
    live: NaiveDateTime,
}

impl<DB> QueryFragment<DB> for MembershipQuery<'_>
where
    DB: diesel::backend::Backend,
    str: diesel::serialize::ToSql<diesel::sql_types::Text, DB>,
    NaiveDateTime: diesel::serialize::ToSql<diesel::sql_types::Timestamp, DB>,
    DB: diesel::sql_types::HasSqlType<diesel::sql_types::Text>
        + diesel::sql_types::HasSqlType<diesel::sql_types::Timestamp>,
{
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, DB>,
    ) -> QueryResult<()> {
        use diesel::sql_types::{Text, Timestamp};
        out.push_sql(
            "SELECT CAST(0 AS BIGINT) AS part, CAST(NULL AS BIGINT) AS no, id, customer_id, \
                    participant_ids AS text, NULL AS owner_id, tm_checked AS tm_create, \
                    tm_update, tm_delete \
               FROM member_chats WHERE id = ",
        );
        out.push_bind_param::<Text, _>(self.chat_id)?;
        out.push_sql(" AND customer_id = ");
        out.push_bind_param::<Text, _>(self.customer_id)?;
        out.push_sql(
            " UNION ALL \
             SELECT CAST(1 AS BIGINT) AS part, no, id, customer_id, chat_id AS text, owner_id, \
                    tm_create, tm_update, tm_delete \
               FROM member_chatrooms WHERE chat_id = ",
        );
        out.push_bind_param::<Text, _>(self.chat_id)?;
        out.push_sql(" AND customer_id = ");
        out.push_bind_param::<Text, _>(self.customer_id)?;
        out.push_sql(" AND tm_delete = ");
        out.push_bind_param::<Timestamp, _>(&self.live)?;
        out.push_sql(" ORDER BY part, id");
        Ok(())
    }
}

impl QueryId for MembershipQuery<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl diesel::query_builder::Query for MembershipQuery<'_> {
    type SqlType = diesel::sql_types::Untyped;
}

impl<C> RunQueryDsl<C> for MembershipQuery<'_> {}

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

pub use common::processed::{mark_processed, purge_processed};

// Read state.

/// Which chatrooms' read states to compute (always the tenant's live rooms of live chats).
#[derive(Debug, Clone, Copy)]
pub enum ReadScope<'a> {
    /// Every room of this owner.
    Owner(&'a str),
    /// Every room of this chat.
    Chat(&'a str),
    /// This room.
    Room(&'a str),
}

/// A read state as the database computes it (`ReadStatesQuery`).
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct ReadStateRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub chatroom_id: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub customer_id: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub chat_id: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub owner_id: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    pub messagechat_id: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Timestamp>)]
    pub tm_last_read: Option<NaiveDateTime>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Timestamp>)]
    pub tm_update: Option<NaiveDateTime>,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub unread_count: i64,
}

/// The read states of the tenant's live chatrooms in `scope`, ordered by chatroom id.
pub fn read_states(
    conn: &mut DbConnection,
    customer_id: &str,
    scope: ReadScope<'_>,
) -> QueryResult<Vec<ReadStateRow>> {
    let query = ReadStatesQuery {
        customer_id,
        scope,
        live: time::live(),
    };
    match conn {
        DbConnection::Pg(c) => query.load(c),
        DbConnection::Sqlite(c) => query.load(c),
    }
}

/// The SQL of `read_states` on PostgreSQL with its parameters (for `EXPLAIN`; see the unread
/// benchmark).
pub fn read_states_pg<'a>(
    customer_id: &'a str,
    scope: ReadScope<'a>,
) -> impl QueryFragment<Pg> + QueryId + 'a {
    ReadStatesQuery {
        customer_id,
        scope,
        live: time::live(),
    }
}

/// A room's unread count without a row per copy: its chat's places after the read point (or
/// after the last live message before the room existed, if later), less the messages after
/// that point that are deleted, the owner's own, or deleted in this room alone. Each is an
/// index range of the few such messages, so the cost does not grow with the unread count.
struct ReadStatesQuery<'a> {
    customer_id: &'a str,
    scope: ReadScope<'a>,
    live: NaiveDateTime,
}

impl<DB> QueryFragment<DB> for ReadStatesQuery<'_>
where
    DB: diesel::backend::Backend,
    str: diesel::serialize::ToSql<diesel::sql_types::Text, DB>,
    NaiveDateTime: diesel::serialize::ToSql<diesel::sql_types::Timestamp, DB>,
    DB: diesel::sql_types::HasSqlType<diesel::sql_types::Text>
        + diesel::sql_types::HasSqlType<diesel::sql_types::Timestamp>,
{
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, DB>,
    ) -> QueryResult<()> {
        use diesel::sql_types::{Text, Timestamp};
        // Planned for its parameters each time: the partial indexes hold for the live mark
        // only when the planner sees it.
        out.unsafe_to_cache_prepared();
        // The rooms and where each one's count starts, computed once per room (materialized:
        // inlined, the start's lookup would run again in each count that uses it).
        out.push_sql(
            "WITH y AS MATERIALIZED \
                  (SELECT r.no, r.id, r.customer_id, r.chat_id, r.owner_id, c.last_seq, \
                          rd.messagechat_id, rd.tm_last_read, rd.tm_update, \
                          COALESCE(rd.read_seq, 0) AS read_seq, \
                          COALESCE((SELECT m.chat_seq FROM chatmessages m \
                                     WHERE m.chat_id = r.chat_id AND m.tm_delete = ",
        );
        out.push_bind_param::<Timestamp, _>(&self.live)?;
        out.push_sql(
            " AND m.tm_create < r.tm_create \
                                     ORDER BY m.tm_create DESC, m.no DESC LIMIT 1), \
                                   0) AS start_seq \
                     FROM member_chatrooms r \
                     JOIN member_chats c ON c.id = r.chat_id AND c.tm_delete = ",
        );
        out.push_bind_param::<Timestamp, _>(&self.live)?;
        out.push_sql(
            " LEFT JOIN chatroom_reads rd ON rd.chatroom_id = r.id \
                    WHERE r.customer_id = ",
        );
        out.push_bind_param::<Text, _>(self.customer_id)?;
        out.push_sql(" AND r.tm_delete = ");
        out.push_bind_param::<Timestamp, _>(&self.live)?;
        let (column, value) = match self.scope {
            ReadScope::Owner(owner) => (" AND r.owner_id = ", owner),
            ReadScope::Chat(chat) => (" AND r.chat_id = ", chat),
            ReadScope::Room(room) => (" AND r.id = ", room),
        };
        out.push_sql(column);
        out.push_bind_param::<Text, _>(value)?;
        out.push_sql(
            ") \
             SELECT x.id AS chatroom_id, x.customer_id, x.chat_id, x.owner_id, x.messagechat_id, \
                    x.tm_last_read, x.tm_update, \
                    x.last_seq - x.lo \
                    - (SELECT count(*) FROM chatmessages m \
                        WHERE m.chat_id = x.chat_id AND m.tm_delete <> ",
        );
        out.push_bind_param::<Timestamp, _>(&self.live)?;
        out.push_sql(
            " AND m.chat_seq > x.lo) \
                    - (SELECT count(*) FROM chatmessages m \
                        WHERE m.chat_id = x.chat_id AND m.sender_id = x.owner_id \
                          AND m.tm_delete = ",
        );
        out.push_bind_param::<Timestamp, _>(&self.live)?;
        out.push_sql(
            " AND m.chat_seq > x.lo) \
                    - (SELECT count(*) FROM chatroommessage_deletions d \
                        WHERE d.room_no = x.no AND d.chat_seq > x.lo \
                          AND (d.sender_id IS NULL OR d.sender_id <> x.owner_id) \
                          AND NOT EXISTS (SELECT 1 FROM chatmessages m \
                                           WHERE m.chat_id = x.chat_id \
                                             AND m.chat_seq = d.chat_seq AND m.tm_delete <> ",
        );
        out.push_bind_param::<Timestamp, _>(&self.live)?;
        out.push_sql(
            ")) AS unread_count \
               FROM (SELECT y.*, CASE WHEN y.read_seq > y.start_seq THEN y.read_seq \
                                      ELSE y.start_seq END AS lo FROM y) x \
              ORDER BY x.id",
        );
        Ok(())
    }
}

impl QueryId for ReadStatesQuery<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl diesel::query_builder::Query for ReadStatesQuery<'_> {
    type SqlType = diesel::sql_types::Untyped;
}

impl<C> RunQueryDsl<C> for ReadStatesQuery<'_> {}

/// Moves the room's read point to `message` if it is after the current one (concurrent moves
/// keep the furthest). Whether it moved.
pub fn advance_read_point(
    conn: &mut DbConnection,
    room: &MemberChatroom,
    message: &ChatmessageRow,
    now: NaiveDateTime,
) -> QueryResult<bool> {
    use diesel::sql_types::{BigInt, Text, Timestamp};
    let query = diesel::sql_query(
        "INSERT INTO chatroom_reads \
             (chatroom_id, customer_id, read_seq, messagechat_id, tm_last_read, tm_update) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (chatroom_id) DO UPDATE SET read_seq = excluded.read_seq, \
             messagechat_id = excluded.messagechat_id, tm_last_read = excluded.tm_last_read, \
             tm_update = excluded.tm_update \
         WHERE chatroom_reads.read_seq < excluded.read_seq",
    )
    .bind::<Text, _>(&room.id)
    .bind::<Text, _>(&room.customer_id)
    .bind::<BigInt, _>(message.chat_seq)
    .bind::<Text, _>(&message.id)
    .bind::<Timestamp, _>(message.tm_create)
    .bind::<Timestamp, _>(now);
    let moved = match conn {
        DbConnection::Pg(c) => query.execute(c)?,
        DbConnection::Sqlite(c) => query.execute(c)?,
    };
    Ok(moved > 0)
}
