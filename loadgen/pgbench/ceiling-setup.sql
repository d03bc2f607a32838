-- The reference ceiling's tables (psql, run by scripts/bench-send): a copy of message-manager's
-- schema (same columns, collations and indexes, empty) in its own schema `loadgen_ceiling`, so
-- that no relay publishes what pgbench writes. The membership view of the chats loadgen just
-- measured is copied in, and the outbox payload of one real send to a chat of that size is
-- kept as the template every pgbench send writes (same size, same compressibility).
--
-- Expects: psql variable `participants`; a table `loadgen_ceiling.bench_chats (n, chat_id)`
-- filled by the caller right after this file's first part (see scripts/bench-send).
\set ON_ERROR_STOP on
DROP SCHEMA IF EXISTS loadgen_ceiling CASCADE;
CREATE SCHEMA loadgen_ceiling;
SET search_path = loadgen_ceiling;
CREATE TABLE chatmessages (LIKE message_manager.chatmessages INCLUDING ALL);
CREATE TABLE member_chats (LIKE message_manager.member_chats INCLUDING ALL);
CREATE TABLE member_chatrooms (LIKE message_manager.member_chatrooms INCLUDING ALL);
-- The outbox with its own sequence (not message-manager's).
CREATE TABLE outbox (LIKE message_manager.outbox INCLUDING ALL EXCLUDING DEFAULTS);
CREATE SEQUENCE outbox_seq OWNED BY outbox.seq;
ALTER TABLE outbox ALTER COLUMN seq SET DEFAULT nextval('outbox_seq');
CREATE TABLE bench_chats (n INTEGER PRIMARY KEY, chat_id TEXT COLLATE "C" NOT NULL);
