-- Second part of the ceiling's set-up, after bench_chats is filled: the chats' membership
-- view and the outbox template (see ceiling-setup.sql).
\set ON_ERROR_STOP on
SET search_path = loadgen_ceiling;
INSERT INTO member_chats
SELECT m.* FROM message_manager.member_chats m JOIN bench_chats b ON b.chat_id = m.id;
INSERT INTO member_chatrooms
SELECT r.* FROM message_manager.member_chatrooms r JOIN bench_chats b ON b.chat_id = r.chat_id;
-- One send to a chat of :participants live chatrooms writes one outbox row: the record of its
-- one event, naming the rooms holding its copies, which the relay renders.
CREATE TABLE template AS
SELECT events, event_count, publish_bytes FROM message_manager.outbox
WHERE events LIKE '{"v":%'
  AND json_array_length(events::json #> '{records,0,fanout,rooms}') = :participants
ORDER BY seq DESC LIMIT 1;
-- The ceiling's own tables only: the services' tables keep the statistics they had (an
-- ANALYZE of the whole database here re-planned the running services' statements on small
-- tables, for the runs after it).
ANALYZE bench_chats, member_chats, member_chatrooms, template, chatmessages, outbox;
SELECT (SELECT count(*) FROM bench_chats) AS chats,
       (SELECT count(*) FROM member_chatrooms) AS chatrooms,
       (SELECT count(*) FROM template) AS templates,
       (SELECT octet_length(events) FROM template) AS outbox_bytes \gset
\if :templates
\else
  \echo 'no outbox row of a send to a chat of' :participants 'participants found: run loadgen first'
  SELECT 1/0;
\endif
\echo ceiling set up: :chats chats, :chatrooms chatrooms, outbox payload :outbox_bytes bytes per send
