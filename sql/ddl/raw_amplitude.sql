-- Written by `make generated` (tasks/generated.py) from the declaration of amplitude in
-- tasks/clients/amplitude.py: edit that, not this file. Idempotent.
create schema if not exists raw;

create table if not exists raw.amplitude__events (
    event_id varchar not null,
    cursor_at varchar,
    payload json not null,
    _source_file varchar,
    _batch_id varchar not null,
    _loaded_at timestamptz not null
);
comment on table raw.amplitude__events is
'grain: one row per Amplitude event; key: event_id (uuid, else ''insert_id:'' || $insert_id). '
'Merged on event_id; cursor_at is the upload time.';

-- Its full history (warehouse rows, plus Parquet day files in the parquet store; tasks/rawstore.py).
create view if not exists raw.amplitude__events_all as select * from raw.amplitude__events;
