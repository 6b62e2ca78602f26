-- The SQLite schema before membership periods, public reads and blocks: what
-- test_store_contract.py's migration tests open a file made by.
CREATE TABLE IF NOT EXISTS messages (
    chat_id TEXT NOT NULL, seq INTEGER NOT NULL, server_id INTEGER NOT NULL,
    sender_user TEXT NOT NULL, sender_device TEXT NOT NULL, client_msg_id TEXT NOT NULL,
    body BLOB NOT NULL, media_ids BLOB, created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (chat_id, seq)) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS messages_dedup ON messages (chat_id, sender_user, client_msg_id);
CREATE TABLE IF NOT EXISTS chats (
    chat_id TEXT PRIMARY KEY, kind INTEGER NOT NULL, title TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS members (
    chat_id TEXT NOT NULL, user_id TEXT NOT NULL, role INTEGER NOT NULL,
    joined_seq INTEGER NOT NULL, PRIMARY KEY (chat_id, user_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS user_chats (
    user_id TEXT NOT NULL, chat_id TEXT NOT NULL, PRIMARY KEY (user_id, chat_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS chat_heads (
    chat_id TEXT PRIMARY KEY, last_seq INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS receipts (
    chat_id TEXT NOT NULL, user_id TEXT NOT NULL, delivered_seq INTEGER NOT NULL DEFAULT 0,
    read_seq INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (chat_id, user_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS device_cursors (
    user_id TEXT NOT NULL, device_id TEXT NOT NULL, chat_id TEXT NOT NULL,
    acked_seq INTEGER NOT NULL, PRIMARY KEY (user_id, device_id, chat_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS users (
    user_id TEXT PRIMARY KEY, read_receipts INTEGER NOT NULL,
    last_seen_visibility INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS devices (
    user_id TEXT NOT NULL, device_id TEXT NOT NULL, first_seen_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL, revoked INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, device_id)) WITHOUT ROWID;
