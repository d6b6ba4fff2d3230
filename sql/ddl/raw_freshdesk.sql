-- Written by `make generated` (tasks/generated.py) from the declaration of freshdesk in
-- tasks/clients/freshdesk.py: edit that, not this file. Idempotent.
create schema if not exists raw;

create table if not exists raw.freshdesk__tickets (
    ticket_id bigint not null,
    cursor_at varchar,
    payload json not null,
    _source_file varchar,
    _batch_id varchar not null,
    _loaded_at timestamptz not null
);
comment on table raw.freshdesk__tickets is
'grain: one row per Freshdesk ticket; key: ticket_id. Merged on ticket_id, latest updated_at wins. '
'Text redacted and requester contact details replaced by salted keys at landing.';
