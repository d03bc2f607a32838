DROP TABLE outbox;
DROP TABLE chatrooms;
DROP TABLE chats;
