ALTER TABLE member_chats DROP COLUMN tm_checked;
