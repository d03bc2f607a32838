DROP TABLE idempotency_keys;
DROP TABLE outbox;
DROP TABLE processed_events;
DROP TABLE member_chatrooms;
DROP TABLE member_chats;
DROP TABLE chatroommessages;
DROP TABLE chatmessages;
