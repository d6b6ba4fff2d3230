-- Written by `make generated` (tasks/generated.py) from the declaration of mixpanel in
-- tasks/clients/mixpanel.py: edit that, not this file. Idempotent.
create schema if not exists raw;

create table if not exists raw.mixpanel__events (
    event_id varchar not null,
    cursor_at varchar,
    payload json not null,
    _source_file varchar,
    _batch_id varchar not null,
    _loaded_at timestamptz not null
);
comment on table raw.mixpanel__events is
'grain: one row per Mixpanel event; key: event_id = md5 of (event, distinct_id, time, $insert_id), '
'or of the whole record without $insert_id. Re-exported days merge onto the same rows.';

-- Its full history (warehouse rows, plus Parquet day files in the parquet store; tasks/rawstore.py).
create view if not exists raw.mixpanel__events_all as select * from raw.mixpanel__events;
