-- One chatmessage send, as message-manager does it on PostgreSQL (MessageManager::send without
-- an Idempotency-Key), for pgbench in the schema loadgen_ceiling (ceiling-setup.sql):
-- 1. read the chat's membership view: the chat and its live chatrooms (with their numbers);
-- 2. one statement (atomic on its own, one commit) writing the chatmessage (its copies are
--    derived from it) and one outbox row: the record of the send's event (the template: a
--    real send's record to a chat of the same size).
-- Variables: nchats (client n posts into chat n % nchats, as loadgen's sender n does), text.
-- Run with -M prepared (diesel prepares its statements too).
\set k :client_id % :nchats
SELECT c.id AS chat, c.customer_id AS customer, c.participant_ids AS participants,
       gen_random_uuid()::text AS mid,
       array_agg(r.no ORDER BY r.id)::text AS rooms,
       json_build_object('type', 'agent', 'target', min(r.owner_id), 'target_name', '',
                         'name', '', 'detail', '')::text AS source
  FROM bench_chats b
  JOIN member_chats c ON c.id = b.chat_id
  LEFT JOIN member_chatrooms r ON r.chat_id = c.id AND r.tm_delete = '9999-01-01 00:00:00'
 WHERE b.n = :k
 GROUP BY c.id, c.customer_id, c.participant_ids \gset
WITH message AS (
  INSERT INTO chatmessages (no, id, customer_id, chat_id, source, message_type, text, medias,
                            tm_create, tm_update, tm_delete)
  VALUES (('x' || lpad(substr(:mid, 1, 8) || substr(:mid, 10, 4) || substr(:mid, 16, 3),
                       16, '0'))::bit(64)::bigint,
          :mid, :customer, :chat, :source, 'normal', :text, '[]',
          localtimestamp, localtimestamp, '9999-01-01 00:00:00'))
INSERT INTO outbox (events, event_count, request_id, traceparent, created_at, publish_bytes)
SELECT t.events, t.event_count, gen_random_uuid()::text,
       '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', localtimestamp,
       t.publish_bytes
  FROM template t;
