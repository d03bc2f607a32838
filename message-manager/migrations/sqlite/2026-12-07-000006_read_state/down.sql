DROP TABLE chatroom_reads;
DROP INDEX member_chatrooms_owner;
DROP INDEX chatmessages_sent_after;
DROP INDEX chatmessages_deleted_after;
ALTER TABLE member_chats DROP COLUMN last_message_at;
ALTER TABLE member_chats DROP COLUMN last_seq;
ALTER TABLE chatmessages DROP COLUMN sender_id;
ALTER TABLE chatmessages DROP COLUMN chat_seq;
