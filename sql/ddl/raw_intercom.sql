-- Written by `make generated` (tasks/generated.py) from the declaration of intercom in
-- tasks/clients/intercom.py: edit that, not this file. Idempotent.
create schema if not exists raw;

create table if not exists raw.intercom__conversations (
    conversation_id varchar not null,
    cursor_at varchar,
    payload json not null,
    _source_file varchar,
    _batch_id varchar not null,
    _loaded_at timestamptz not null
);
comment on table raw.intercom__conversations is
'grain: one row per Intercom conversation; key: conversation_id. Merged on conversation_id, latest '
'updated_at wins. Text redacted and author replaced by salted keys at landing.';
