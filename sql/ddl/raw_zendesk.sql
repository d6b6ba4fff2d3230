-- Written by `make generated` (tasks/generated.py) from the declaration of zendesk in
-- tasks/clients/zendesk.py: edit that, not this file. Idempotent.
create schema if not exists raw;

create table if not exists raw.zendesk__tickets (
    ticket_id bigint not null,
    cursor_at varchar,
    payload json not null,
    _source_file varchar,
    _batch_id varchar not null,
    _loaded_at timestamptz not null
);
comment on table raw.zendesk__tickets is
'grain: one row per Zendesk ticket; key: ticket_id. Merged on ticket_id, latest updated_at wins.';
